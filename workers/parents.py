"""Jobs that wait on child jobs (a story on its illustrations, a film on its narrations and its
render, a batch on its stories): how each is settled when a child finishes, is canceled, or
stops without completing. The one place that knows every kind of parent, so that the modules
of each kind (fanout, film, batch) need not import one another.
"""

from __future__ import annotations

import uuid

from sqlalchemy import update
from sqlalchemy.orm import Session

from models import Job, Story
from workers import film
from workers.batch import settle_batch
from workers.fanout import settle_story
from workers.lifecycle import request_cancel, stop_children

# Parents with no worker of their own while they wait: a cancel must settle them right away.
WAITING_KINDS = frozenset({"story", "film"})


def on_child_finished(session: Session, parent_id: uuid.UUID) -> None:
    """Advance the parent's progress, or complete it when its last child has finished.

    Runs after the child's own commit, so whoever commits last sees every sibling finished;
    fenced updates make a second completion a no-op. A parent that completes is itself a child
    of a batch's: the batch then counts it."""
    parent = session.get(Job, parent_id, populate_existing=True)
    if parent is None or parent.status != "running":
        return
    if parent.kind == "story_batch":
        settle_batch(session, parent_id)
        return
    completed = (film.settle_film(session, parent) if parent.kind == "film"
                 else settle_story(session, parent))
    if completed and parent.parent_id is not None:
        on_child_finished(session, parent.parent_id)


def cancel_job(session: Session, job: Job) -> Job:
    """Cancel a job and its children; a parent waiting on children is settled at once, as it
    has no worker to notice the request."""
    request_cancel(session, job)
    if job.kind in WAITING_KINDS:
        on_child_finished(session, job.id)
        session.refresh(job)
    return job


def abandon_attempt(session: Session, job_id: uuid.UUID) -> None:
    """The job stopped without completing (retry, failure, cancel): stop its children, and
    mark the version it was making so that it is never shown."""
    stop_children(session, job_id)
    session.execute(
        update(Story).where(Story.job_id == job_id, Story.status.in_(("writing",)))
        .values(status="failed")
    )
    film.abandon_film(session, job_id)
    session.commit()
