"""Draw one illustration, store it, and (for a story chapter) attach it to the chapter."""

from __future__ import annotations

import uuid

from models import Chapter
from workers.app import celery_app
from workers.runner import JobRun, run_job


def illustrate(run: JobRun) -> None:
    spec = run.job.input
    run.progress("drawing", 0, 1)
    illustrator = run.context.provider.illustrator
    image = run.call_upstream(
        illustrator.model,
        # An image answer costs about 1,300 output tokens; the prompt ~4 characters a token.
        len(spec["prompt"]) // 4 + 1400,
        lambda: illustrator.illustrate(spec["prompt"], spec["style"]),
    )
    run.check_cancel()
    # Keyed by the job: a retried or redelivered job overwrites its image, never duplicates it.
    stored = run.context.storage.save(f"illustrations/{run.job.id}", image.data, image.mime_type)
    chapter_id = spec.get("chapterId")
    if chapter_id:
        chapter = run.session.get(Chapter, uuid.UUID(chapter_id))
        if chapter is not None:
            chapter.generated_image_url = stored.url
    run.succeed(
        {
            "imageUrl": stored.url,
            "width": image.width,
            "height": image.height,
            "mimeType": image.mime_type,
            "chapterId": chapter_id,
        },
        usage=image.usage,
    )


@celery_app.task(name="lifetales.generate_illustration", acks_late=True, ignore_result=True)
def generate_illustration(job_id: str) -> None:
    run_job(job_id, illustrate)
