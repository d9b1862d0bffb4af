"""Speak one text (a film scene's narration, or any text a client sends) and store the audio."""

from __future__ import annotations

from typing import Any

from agents.speech import estimated_tokens
from workers.app import celery_app
from workers.attempt import JobRun, usage_dict
from workers.cache import cached_result
from workers.events import emit
from workers.runner import run_job

# What a film's scene adds to a narration's input, and gets back in its result and event.
SCENE_KEYS = ("chapterId", "sceneIndex")


def narrate(run: JobRun) -> None:
    spec = run.job.input
    text, voice_style, language = spec["text"].strip(), spec["voiceStyle"], spec.get("language")
    run.progress("speaking", 0, 1)
    narrator = run.context.provider.narrator

    def speak() -> dict[str, Any]:
        tokens = estimated_tokens(text)
        speech = run.call_upstream(
            narrator.model, tokens, lambda: narrator.narrate(text, voice_style, language))
        run.check_cancel()
        # Keyed by the job: a retried or redelivered job overwrites its file, never duplicates.
        stored = run.context.storage.save(
            f"narrations/{run.job.id}", speech.data, speech.mime_type)
        return {"audioUrl": stored.url, "mimeType": speech.mime_type,
                "durationSeconds": round(speech.duration_seconds, 3),
                "usage": usage_dict(speech.usage)}

    # The same words in the same voice reuse the stored audio instead of speaking them again.
    value, cached = cached_result(
        run, agent="narration", model=narrator.model, prompt_version=narrator.prompt_version,
        payload={"text": text, "voiceStyle": voice_style, "language": language},
        compute=speak,
    )
    audio = {key: value[key] for key in ("audioUrl", "mimeType", "durationSeconds")}
    scene = {key: spec[key] for key in SCENE_KEYS if key in spec}
    if run.job.parent_id is not None:
        # Committed with the result below: the parent (a film) learns of the audio the moment
        # it is the job's result, and never of audio a failed commit left unreferenced.
        emit(run.session, run.job.parent_id, "narration",
             {**dict.fromkeys(SCENE_KEYS), **scene, "audioUrl": audio["audioUrl"],
              "durationSeconds": audio["durationSeconds"]})
    run.succeed(audio | scene | {"cached": cached}, usage=None if cached else value["usage"])


@celery_app.task(name="lifetales.narrate_text", acks_late=True, ignore_result=True)
def narrate_text(job_id: str) -> None:
    run_job(job_id, narrate)
