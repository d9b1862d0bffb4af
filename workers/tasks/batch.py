"""The batch task: one fan-out step per run. While targets are left it re-schedules itself
(holding no worker thread between steps); once they are all fanned out it leaves the batch
running, to be finished by its last child (``workers.batch.settle_batch``)."""

from __future__ import annotations

from workers import lifecycle
from workers.app import celery_app
from workers.attempt import JobCanceled, JobRun, MustWait
from workers.batch import POLL_S, child_totals, fan_out_chunk, settle_batch
from workers.runner import run_job


def run_story_batch(run: JobRun) -> None:
    settings = run.context.settings
    step = fan_out_chunk(run.session, run.job, window=settings.batch.window,
                         story_attempts=settings.attempts_for("story"))
    if step == "canceled":
        lifecycle.request_cancel(run.session, run.job)  # children made since the request too
        raise JobCanceled
    if step == "stale":
        raise JobCanceled  # taken from us: the fence below will not move it
    if step == "more":
        raise MustWait(POLL_S, step="fanning_out")
    totals = child_totals(run.session, run.job.id)
    total = sum(totals.values())
    run.progress("waiting_for_children", total - totals["queued"] - totals["running"], total)
    settle_batch(run.session, run.job.id)  # nothing left running: finish now


@celery_app.task(name="lifetales.run_story_batch", acks_late=True, ignore_result=True)
def run_story_batch_task(job_id: str) -> None:
    run_job(job_id, run_story_batch)
