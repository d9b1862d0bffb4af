"""Draw one illustration, store it, and (for a story chapter) attach it to the chapter."""

from __future__ import annotations

import uuid
from typing import Any

from models import Chapter
from workers.app import celery_app
from workers.attempt import JobRun, usage_dict
from workers.cache import cached_result
from workers.events import emit
from workers.runner import run_job


def variant_prompt(prompt: str, variant: int, variants: int) -> str:
    """Several images of one chapter must differ: each variant asks for its own take."""
    if variants <= 1:
        return prompt
    return f"{prompt} (variation {variant + 1} of {variants}: a different moment or angle)"


def illustrate(run: JobRun) -> None:
    spec = run.job.input
    variant, variants = int(spec.get("variant", 0)), int(spec.get("variants", 1))
    prompt = variant_prompt(spec["prompt"], variant, variants)
    run.progress("drawing", 0, 1)
    illustrator = run.context.provider.illustrator

    def draw() -> dict[str, Any]:
        image = run.call_upstream(
            illustrator.model,
            # An image answer costs about 1,300 output tokens; the prompt ~4 characters a token.
            len(prompt) // 4 + 1400,
            lambda: illustrator.illustrate(prompt, spec["style"]),
        )
        # Keyed by the job: a retried or redelivered job overwrites its image, never duplicates.
        stored = run.context.storage.save(
            f"illustrations/{run.job.id}", image.data, image.mime_type
        )
        return {"imageUrl": stored.url, "width": image.width, "height": image.height,
                "mimeType": image.mime_type, "usage": usage_dict(image.usage)}

    # The same prompt in the same style reuses the stored image instead of drawing it again.
    value, cached = cached_result(
        run, agent="illustration", model=illustrator.model,
        prompt_version=illustrator.prompt_version,
        payload={"prompt": prompt, "style": spec["style"]},
        compute=draw,
    )
    if not cached:
        run.check_cancel()  # here, not in draw(): that runs before its answer is kept
    chapter_id = spec.get("chapterId")
    if chapter_id:
        attach_to_chapter(run, uuid.UUID(chapter_id), variant, variants, value["imageUrl"])
    run.succeed(
        {key: value[key] for key in ("imageUrl", "width", "height", "mimeType")}
        | {"chapterId": chapter_id, "cached": cached},
        usage=None if cached else value["usage"],
    )


def attach_to_chapter(run: JobRun, chapter_id: uuid.UUID, variant: int, variants: int,
                      url: str) -> None:
    # Locked: the chapter's other variants may be attaching at the same moment.
    chapter = run.session.get(Chapter, chapter_id, with_for_update=True)
    if chapter is None:
        return  # the story version was discarded (regenerated or canceled) meanwhile
    urls: list[Any] = list(chapter.generated_image_urls or [None] * variants)
    urls += [None] * (variants - len(urls))
    urls[variant] = url
    chapter.generated_image_urls = urls
    chapter.generated_image_url = next((u for u in urls if u), None)
    if run.job.parent_id is not None:
        emit(run.session, run.job.parent_id, "illustration",
             {"chapterId": str(chapter_id), "position": chapter.position, "variant": variant,
              "imageUrl": url})


@celery_app.task(name="lifetales.generate_illustration", acks_late=True, ignore_result=True)
def generate_illustration(job_id: str) -> None:
    run_job(job_id, illustrate)
