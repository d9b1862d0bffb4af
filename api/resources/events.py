"""GET /jobs/{id}/events: the job's progress as Server-Sent Events, resumable with
Last-Event-ID. The job_events table is the log; Redis pub/sub (when configured) wakes the
stream as soon as something is appended, otherwise the stream polls."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from flask import Response, request
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.auth import SECURITY, current_user_id, token_required
from api.errors import error_responses
from api.job_watch import JobWatcher
from api.ownership import owned_job
from api.state import db, state
from models import JobEvent

blp = Blueprint("events", __name__, url_prefix="/api/v1", description="Live job events")

POLL_S = 0.25  # without Redis notifications
WAKE_TIMEOUT_S = 1.0  # with them: still re-read the log now and then (a lost notification)
KEEPALIVE_S = 15.0
MAX_STREAM_S = 600.0  # then the client reconnects with Last-Event-ID, losing nothing
BATCH = 200
EVENT_TYPES = ("status", "progress", "chapter", "illustration", "restart", "error", "done")
# One event of the stream, as OpenAPI 3.1 tools read text/event-stream: its data is JSON.
SSE_EVENT = {
    "type": "object",
    "required": ["id", "event", "data"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "event": {"type": "string", "enum": list(EVENT_TYPES)},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}


def last_event_id() -> int:
    raw = request.headers.get("Last-Event-ID") or request.args.get("lastEventId") or "0"
    try:
        value = int(raw)
    except ValueError:
        abort(422, message="Last-Event-ID must be the integer id of an event")
    if value < 0:
        abort(422, message="Last-Event-ID must be the integer id of an event")
    return value


def sse(event: JobEvent) -> str:
    data = json.dumps(event.data, separators=(",", ":"), default=str)
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n"


def done_event_id(session: Session, job_id: uuid.UUID) -> int | None:
    return session.scalar(
        select(JobEvent.id).where(JobEvent.job_id == job_id, JobEvent.type == "done")
    )


def event_stream(
    factory: sessionmaker[Session], watcher: JobWatcher, job_id: uuid.UUID, after: int
) -> Iterator[str]:
    started = last_sent = time.monotonic()
    # Registered before the first read: nothing appended in between goes unnoticed.
    with watcher.watch(job_id) as watch:
        yield "retry: 2000\n\n"
        while time.monotonic() - started < MAX_STREAM_S:
            with factory() as session:
                events = list(session.scalars(
                    select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after)
                    .order_by(JobEvent.id).limit(BATCH)
                ))
                # Resumed past the end (an id after ``done``): nothing more will ever come.
                over = not events and done_event_id(session, job_id) is not None
            if over:
                return
            for event in events:
                after = event.id
                last_sent = time.monotonic()
                yield sse(event)
                if event.type == "done":
                    return
            if len(events) == BATCH:
                continue
            watch.wait(WAKE_TIMEOUT_S, poll_s=POLL_S)
            if time.monotonic() - last_sent > KEEPALIVE_S:
                last_sent = time.monotonic()
                yield ": keep-alive\n\n"


@blp.route("/jobs/<uuid:job_id>/events")
class JobEvents(MethodView):
    decorators = [token_required]
    rate_limit_group = "polling"

    @blp.doc(
        security=SECURITY,
        parameters=[{"in": "header", "name": "Last-Event-ID", "required": False,
                     "description": "Resume after this event id (an integer).",
                     "schema": {"type": "string", "pattern": "^[0-9]+$"}}],
        responses={"200": {
            "description": "Server-Sent Events: status, progress, chapter, illustration, "
                           "restart, error, done (the last one). Resume with Last-Event-ID.",
            "content": {"text/event-stream": {"schema": SSE_EVENT}},
        }, "204": {"description": "The stream is over: Last-Event-ID is at or after the job's "
                                 "``done`` event (EventSource then stops reconnecting)."},
            **error_responses(401, 404, 422, 429)},
    )
    def get(self, job_id: uuid.UUID) -> Response:
        """Stream the job's events from the beginning, or after ``Last-Event-ID``."""
        app_state: Any = state()
        mirror = app_state.mirror
        if mirror is None or mirror.owner(job_id) != str(current_user_id()):
            owned_job(job_id)  # a miss in Redis: the database says (404 if not the user's)
        after = last_event_id()
        done = done_event_id(db(), job_id) if after else None
        if done is not None and after >= done:
            # The client has seen the end. 204 is what tells EventSource to stop reconnecting.
            return Response(status=204)
        return Response(
            event_stream(app_state.session_factory, app_state.watcher, job_id, after),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
