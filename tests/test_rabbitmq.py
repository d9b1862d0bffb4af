"""RabbitMQ as the broker, what Redis has no equivalent for: durable quorum queues, countdowns
that wait in the broker (native delayed delivery), and publisher confirms. The behaviour both
brokers share is tested on both (test_reliability.py, test_batches.py, test_e2e_platform.py)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fakes.gemini_server import FakeGemini
from tests.platform import ROOT, running_stack
from tests.rabbitmq import (
    delayed_messages,
    delete_platform_queues,
    platform_queue_names,
    queue_types,
    rabbitmqctl,
)

pytestmark = pytest.mark.integration


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_job_queues_are_quorum_queues_and_a_retry_waits_in_the_broker(
    tmp_path: Path, rabbitmq_vhost: str
) -> None:
    with FakeGemini() as gemini, running_stack(tmp_path, gemini, rabbitmq_vhost) as stack:
        # A worker of two queues declares them all, so each gets its delayed-delivery binding
        # whichever worker starts first.
        stack.services.start_worker("w1", concurrency=2, queues="transcription,illustration")
        types = queue_types(rabbitmq_vhost)
        assert {name: types.get(name) for name in platform_queue_names()} == dict.fromkeys(
            platform_queue_names(), "quorum durable=true")
        assert "Failed to bind" not in stack.services.log("w1")

        gemini.fail_next("illustration", status=429, retry_delay="6s")
        job = stack.client.call("POST", "/illustrations", expect=202,
                                json={"prompt": "a quay in the rain", "style": "pastel"}).json()
        wait_for(lambda: gemini.requests_of("illustration"), 15, "the rate-limited call")
        # The re-scheduled message sits in a delay queue of the broker, not in the worker.
        wait_for(lambda: delayed_messages(rabbitmq_vhost) == 1, 4, "the delayed message")
        done = stack.client.wait_job(job["id"], timeout=40)
        assert done["status"] == "succeeded", done
        assert delayed_messages(rabbitmq_vhost) == 0
        assert "direct exchange" not in stack.services.log("w1")


def test_a_message_the_broker_refuses_is_known_as_not_sent(rabbitmq_vhost: str) -> None:
    """Publisher confirms: RabbitMQ refusing a message (here a full queue) makes the send
    return False, logged, so it is not taken for sent (the reaper re-sends the job)."""
    vhost = rabbitmq_vhost.rsplit("/", 1)[1]
    delete_platform_queues(rabbitmq_vhost)
    rabbitmqctl("set_policy", "-p", vhost, "lt-full-illustrations", "^illustration$",
                '{"max-length": 1, "overflow": "reject-publish"}', "--apply-to", "queues")
    script = (
        "import uuid\n"
        "from workers.sending import send_task_message\n"
        "print([send_task_message('lifetales.generate_illustration', 'illustration',"
        " [str(uuid.uuid4())]) for _ in range(3)])\n"
    )
    try:
        run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                             text=True, timeout=60,
                             env={"PATH": "/usr/bin:/bin", "CELERY_BROKER_URL": rabbitmq_vhost})
    finally:
        rabbitmqctl("clear_policy", "-p", vhost, "lt-full-illustrations")
        delete_platform_queues(rabbitmq_vhost)
    assert run.returncode == 0, run.stderr
    # Two fit (RabbitMQ rejects once a queue is over its length), the third is refused.
    assert run.stdout.strip() == "[True, True, False]", run.stdout + run.stderr
    assert "task message not sent" in run.stderr
