"""Job webhooks: an outbox of deliveries written in the transaction of the transition each one
announces, sent after commit through the ``webhooks`` queue, signed the Standard Webhooks way
and retried with exponential backoff; every attempt is recorded on the delivery.

Signature: ``webhook-signature: v1,<base64 HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.
{body}")>`` where ``key`` is the base64-decoded part of the user's secret after ``whsec_``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import secrets
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import urllib3
from sqlalchemy import func, insert, inspect, literal, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from config import WebhookSettings
from models import Job, User, WebhookDelivery
from models.base import utcnow
from models.job import loaded_job
from workers.job_mirror import JOBS, touch
from workers.job_resource import webhook_payload

log = logging.getLogger(__name__)

TASK = "lifetales.deliver_webhook"
QUEUE = "webhooks"
SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of a secret, not one
USER_AGENT = "LifeTales-Webhooks/1"
EVENT_HEADER = "LifeTales-Event"
RESEND_BATCH = 500
# 4xx answers that mean "try again later"; any other 4xx is final.
RETRYABLE_4XX = frozenset({408, 429})
# Kept of the receiver's answer: enough to free the connection, nothing is stored.
MAX_RESPONSE_READ = 4096


# --- secrets and signatures ----------------------------------------------------------------


def new_secret() -> str:
    """A signing secret: ``whsec_`` + base64 of 24 random bytes (the HMAC key)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one attempt."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def ensure_secret(session: Session, user_id: uuid.UUID) -> str:
    """The user's signing secret, created (in the caller's transaction) on first use."""
    secret = session.scalar(select(User.webhook_secret).where(User.id == user_id))
    if secret:
        return secret
    session.execute(update(User).where(User.id == user_id, User.webhook_secret.is_(None))
                    .values(webhook_secret=new_secret()))
    created = session.scalar(select(User.webhook_secret).where(User.id == user_id))
    assert created is not None
    return created


def rotate_secret(session: Session, user_id: uuid.UUID) -> str:
    """Replace the user's secret; deliveries sent from now on (retries too) use the new one."""
    secret = new_secret()
    session.execute(update(User).where(User.id == user_id).values(webhook_secret=secret))
    return secret


# --- where a webhook may go (SSRF guard) ---------------------------------------------------


class WebhookRefused(ValueError):
    """The URL may not receive webhooks; ``retryable`` when it may later (DNS trouble)."""

    def __init__(self, reason: str, *, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    addresses: tuple[str, ...]

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def resolve_target(url: str, *, allow_http: bool, allow_private: bool) -> Target:
    """Check a webhook URL and resolve its host; every address must be public unless allowed.

    Run at submit and again before each attempt (DNS may have changed); the attempt then
    connects to the address checked here, never to a second lookup's answer.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise WebhookRefused("is not a valid URL") from None
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        raise WebhookRefused("must be an https:// URL" if not allow_http
                             else "must be an http:// or https:// URL")
    host = parts.hostname
    if not host:
        raise WebhookRefused("has no host")
    if parts.username is not None or parts.password is not None:
        raise WebhookRefused("must not carry credentials")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise WebhookRefused(f"host {host} does not resolve", retryable=True) from None
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    if not allow_private and not all(is_public_address(a) for a in addresses):
        raise WebhookRefused(
            f"host {host} resolves to a loopback, private or link-local address")
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    return Target(parts.scheme, host, port, path, addresses)


# --- the outbox: deliveries written with the transitions they announce ----------------------

_SEND = "lifetales.pending_webhooks"


def _known_without_webhook(job: Job | None) -> bool:
    # webhook_url never changes after the job is created, so a loaded value is current.
    return job is not None and "webhook_url" in inspect(job).dict and job.webhook_url is None


def _wants(job: Job | None, event: str) -> bool:
    if job is None or "webhook_url" not in inspect(job).dict or job.webhook_url is None:
        return False
    return event in (job.webhook_events or ())


def _send_after_commit(session: Session, delivery_id: uuid.UUID) -> None:
    from workers.sending import enqueue_task_after_commit

    enqueue_task_after_commit(session, TASK, QUEUE, [str(delivery_id)])


def _add_delivery(session: Session, job: Job, event: str, payload: dict[str, Any]) -> None:
    now = utcnow()
    delivery = WebhookDelivery(id=uuid.uuid4(), job_id=job.id, event=event, status="pending",
                               attempts=0, attempt_log=[], payload=payload, created_at=now,
                               updated_at=now)
    session.add(delivery)
    _send_after_commit(session, delivery.id)


def on_start(session: Session, job_id: uuid.UUID) -> None:
    """A worker started the job: a ``start`` delivery if its webhook asked for them."""
    job = loaded_job(session, job_id)
    if _wants(job, "start"):
        assert job is not None
        _add_delivery(session, job, "start", webhook_payload(job))


def on_progress(session: Session, job_id: uuid.UUID, progress: dict[str, Any]) -> None:
    """Progress: a ``progress`` delivery if asked for; one not yet attempted takes the newer
    payload instead of a second delivery queuing behind it (a fast job sends few)."""
    job = loaded_job(session, job_id)
    if not _wants(job, "progress"):
        return
    assert job is not None
    payload = {**webhook_payload(job), "progress": progress}
    now = utcnow()
    coalesced = session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.job_id == job_id, WebhookDelivery.event == "progress",
               WebhookDelivery.status == "pending", WebhookDelivery.attempts == 0)
        .values(payload=payload, updated_at=now)
        .returning(WebhookDelivery.id)
        .execution_options(synchronize_session=False)
    ).first()
    if coalesced is None:
        _add_delivery(session, job, "progress", payload)


def on_completed(session: Session, job_id: uuid.UUID) -> None:
    """The job reached a terminal state: its ``completed`` delivery, always sent.

    Free for a job this session holds and knows has no webhook; otherwise one INSERT ... SELECT
    that inserts nothing without a webhook. The payload is taken on the first attempt: the job
    is terminal, its resource no longer changes.
    """
    if _known_without_webhook(loaded_job(session, job_id)):
        return
    now = utcnow()
    new_id = uuid.uuid4()
    source = select(
        literal(new_id, WebhookDelivery.id.type), Job.id, literal("completed"),
        literal("pending"), literal(0), literal(now, WebhookDelivery.created_at.type),
        literal(now, WebhookDelivery.updated_at.type),
    ).where(Job.id == job_id, Job.webhook_url.is_not(None))
    inserted = session.scalars(
        insert(WebhookDelivery)
        .from_select(["id", "job_id", "event", "status", "attempts", "created_at", "updated_at"],
                     source)
        .returning(WebhookDelivery.id)
    ).first()
    if inserted is not None:
        _send_after_commit(session, inserted)


# --- sending ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    retry_after_s: float | None = None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retryable(self) -> bool:
        if self.status_code is None:
            return self.error is None or not self.error.startswith("refused")
        return not (400 <= self.status_code < 500) or self.status_code in RETRYABLE_4XX


def post(url: str, headers: dict[str, str], body: bytes, settings: WebhookSettings) -> Outcome:
    """POST once, to the address the SSRF check approved; redirects are not followed."""
    try:
        target = resolve_target(url, allow_http=settings.allow_http,
                                allow_private=settings.allow_private)
    except WebhookRefused as exc:
        return Outcome(None, f"{'unresolved' if exc.retryable else 'refused'}: {exc.reason}")
    timeout = urllib3.Timeout(connect=settings.connect_timeout_s, read=settings.read_timeout_s)
    address = target.addresses[0]
    pool: urllib3.HTTPConnectionPool
    if target.scheme == "https":
        # Connect to the checked address; TLS still verifies the certificate for the host.
        pool = urllib3.HTTPSConnectionPool(
            address, target.port, timeout=timeout, retries=False, maxsize=1,
            server_hostname=target.host, assert_hostname=target.host, cert_reqs="CERT_REQUIRED")
    else:
        pool = urllib3.HTTPConnectionPool(address, target.port, timeout=timeout, retries=False,
                                          maxsize=1)
    try:
        with pool:
            response = pool.urlopen(
                "POST", target.path, body=body, headers={**headers, "Host": target.host_header},
                redirect=False, retries=False, preload_content=False, assert_same_host=False)
            try:
                response.read(MAX_RESPONSE_READ)
            finally:
                response.release_conn()
    except urllib3.exceptions.NewConnectionError:  # (a subclass of the connect timeout)
        return Outcome(None, "connection_error: refused or unreachable")
    except urllib3.exceptions.TimeoutError:
        return Outcome(None, "timeout")
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        return Outcome(None, f"connection_error: {type(exc).__name__}")
    return Outcome(response.status, None, _retry_after(response.headers.get("Retry-After")))


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def backoff_s(attempt: int, settings: WebhookSettings, retry_after: float | None = None) -> float:
    """Exponential backoff with jitter, never shorter than a 429's Retry-After, capped."""
    delay = min(settings.retry_max_s, settings.retry_base_s * 2 ** max(0, attempt - 1))
    delay = random.uniform(delay / 2, delay)  # noqa: S311 - jitter, not cryptography
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, settings.retry_max_s)


@dataclass(frozen=True)
class Claimed:
    attempt: int
    event: str
    url: str
    secret: str
    body: bytes


def _claim(session: Session, delivery_id: uuid.UUID, settings: WebhookSettings) -> Claimed | None:
    """Take the delivery's next attempt, if it is due and nobody holds it (a lease as long as
    an attempt can take): a duplicated or early message is a no-op."""
    now = utcnow()
    lease = timedelta(seconds=settings.connect_timeout_s + settings.read_timeout_s + 5)
    row = session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == "pending",
               or_(WebhookDelivery.next_attempt_at.is_(None),
                   WebhookDelivery.next_attempt_at <= now + timedelta(seconds=1)))
        .values(attempts=WebhookDelivery.attempts + 1, next_attempt_at=now + lease,
                updated_at=now)
        .returning(WebhookDelivery.attempts, WebhookDelivery.event, WebhookDelivery.job_id,
                   WebhookDelivery.payload)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    if row is None:
        return None
    attempt, event, job_id, payload = row
    job = session.get(Job, job_id)
    if job is None or not job.webhook_url:
        session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
                        .values(status="failed", next_attempt_at=None))
        return None
    if payload is None:  # a ``completed`` delivery: frozen now, sent as is by every retry
        payload = webhook_payload(job)
        session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
                        .values(payload=payload))
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return Claimed(attempt, event, job.webhook_url, ensure_secret(session, job.owner_id), body)


def deliver(
    session_factory: sessionmaker[Session], settings: WebhookSettings, delivery_id: uuid.UUID
) -> Outcome | None:
    """Make one attempt of a delivery and record it; schedules the next one on failure.
    None: nothing to do (delivered, failed for good, not due yet or being attempted)."""
    with session_factory() as session:
        claimed = _claim(session, delivery_id, settings)
        session.commit()
    if claimed is None:
        return None
    timestamp = int(utcnow().timestamp())
    webhook_id = str(delivery_id)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(claimed.secret, webhook_id, timestamp, claimed.body),
        EVENT_HEADER: claimed.event,
    }
    outcome = post(claimed.url, headers, claimed.body, settings)
    with session_factory() as session:
        _record(session, delivery_id, claimed.attempt, outcome, settings)
        session.commit()
    log.info("webhook attempt", extra={
        "delivery_id": webhook_id, "event": claimed.event, "attempt": claimed.attempt,
        "status_code": outcome.status_code, "error": outcome.error})
    return outcome


def _record(session: Session, delivery_id: uuid.UUID, attempt: int, outcome: Outcome,
            settings: WebhookSettings) -> None:
    delivery = session.scalar(
        select(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.attempts == attempt,
               WebhookDelivery.status == "pending")
        .with_for_update()
    )
    if delivery is None:
        return
    now = utcnow()
    entry = {"attempt": attempt, "statusCode": outcome.status_code, "error": outcome.error,
             "at": now.isoformat()}
    delivery.attempt_log = [*(delivery.attempt_log or []), entry]
    delivery.last_status_code = outcome.status_code
    delivery.updated_at = now
    if outcome.delivered:
        delivery.status, delivery.next_attempt_at = "delivered", None
    elif outcome.retryable and attempt < settings.max_attempts:
        delay = backoff_s(attempt, settings, outcome.retry_after_s)
        delivery.next_attempt_at = now + timedelta(seconds=delay)
        from workers.sending import enqueue_task_after_commit

        enqueue_task_after_commit(session, TASK, QUEUE, [str(delivery_id)], countdown=delay)
    else:
        delivery.status, delivery.next_attempt_at = "failed", None
    # The attempt shows in the job's document (``webhookDeliveries``): a new version of it.
    session.execute(update(JOBS).where(JOBS.c.id == delivery.job_id)
                    .values(updated_at=JOBS.c.updated_at))
    touch(session, delivery.job_id)


def resend_due_deliveries(session: Session, *, overdue_s: float) -> int:
    """Re-send the message of deliveries overdue by ``overdue_s`` (lost with a broker or a
    worker); the claim's lease makes a duplicate harmless. Returns how many were sent."""
    from workers.sending import send_task_message

    due: datetime = utcnow() - timedelta(seconds=overdue_s)
    ids = session.scalars(
        select(WebhookDelivery.id)
        .where(WebhookDelivery.status == "pending",
               func.coalesce(WebhookDelivery.next_attempt_at, WebhookDelivery.created_at) < due)
        .order_by(WebhookDelivery.created_at)
        .limit(RESEND_BATCH)
    ).all()
    return sum(send_task_message(TASK, QUEUE, [str(i)]) for i in ids)
