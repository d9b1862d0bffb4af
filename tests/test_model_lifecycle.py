"""Model lifecycle: today's defaults against an API on which every 2.x model is shut down,
fallbacks that take over and are remembered, ``model_unavailable`` when none answers, the
start-up check, ``/ready`` and ``lifetales models``, and the thinking field of each family."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flask import Flask
from google.genai import types
from sqlalchemy.orm import Session, sessionmaker

from agents import gemini as gemini_api
from agents.config import AgentSettings, ModelRoute
from agents.errors import AgentError
from agents.illustration import GeminiIllustrator
from agents.models import availability, thinking_config
from agents.provider import build_provider
from agents.story_builder import GeminiStoryBuilder
from agents.transcription import GeminiTranscriber
from agents.types import NoteInput, StorySettings
from config import Settings
from models import User
from tests.conftest import FAKE_GEMINI_KEY
from tests.fakes.gemini_server import FakeGemini
from tests.test_worker_jobs import audio_job, ctx, fresh, gemini, user
from workers.context import WorkerContext
from workers.model_check import log_model_checks
from workers.runner import run_job
from workers.tasks.transcription import transcribe_media

__all__ = ["ctx", "gemini", "user"]  # fixtures shared with the worker tests

ROOT = Path(__file__).resolve().parent.parent
NOTES = (
    NoteInput(id="n-1", timestamp_ms=1_700_000_000_000, text_content="Arrival in Porto."),
    NoteInput(id="n-2", timestamp_ms=1_700_000_600_000, text_content="Dinner by the river."),
)
# A deployment still configured as the frontend was: the 2.x models, now shut down.
LEGACY_ENV = {
    "GEMINI_API_KEY": FAKE_GEMINI_KEY,
    "GEMINI_MODEL_FLASH": "gemini-2.5-flash",
    "GEMINI_MODEL_IMAGE": "gemini-2.5-flash-image",
}


def settings_from(**env: str) -> AgentSettings:
    return AgentSettings.from_env({"GEMINI_API_KEY": FAKE_GEMINI_KEY, **env})


def run_all_agents(settings: AgentSettings, times: int) -> list[str]:
    """Each agent ``times`` times; the models that answered, in order."""
    answered = []
    for _ in range(times):
        answered.append(GeminiTranscriber(settings).transcribe(b"RIFF-audio", "audio/wav")
                        .usage.model)
        answered.append(GeminiStoryBuilder(settings).build(NOTES, "Porto", StorySettings())
                        .usage.model)
        answered.append(GeminiIllustrator(settings).illustrate("A bridge", "pastel").usage.model)
    return answered


def models_called(fake: FakeGemini) -> list[str]:
    return [r.model or "" for r in fake.requests]


# --- defaults and fallbacks ------------------------------------------------------------------


def test_defaults_work_where_every_2x_model_is_shut_down(fake_gemini: FakeGemini) -> None:
    assert {"gemini-2.5-flash", "gemini-2.5-flash-image"} <= fake_gemini.models.retired

    answered = run_all_agents(AgentSettings(gemini_api_key=FAKE_GEMINI_KEY), times=2)

    assert answered == ["gemini-3.5-flash-lite", "gemini-3.8-flash", "gemini-nano-banana-2.1"] * 2
    assert all(r.status == 200 for r in fake_gemini.requests)  # no 404, no 400 thinking config
    assert not any(m.startswith("gemini-2.") for m in models_called(fake_gemini))


def test_a_fallback_takes_over_and_the_retired_model_is_remembered(
    fake_gemini: FakeGemini, caplog: pytest.LogCaptureFixture
) -> None:
    settings = AgentSettings.from_env(
        {**LEGACY_ENV, "GEMINI_FALLBACK_MODELS_IMAGE": "gemini-nano-banana-2.1"})

    with caplog.at_level(logging.ERROR, logger="agents.gemini"):
        answered = run_all_agents(settings, times=5)

    # The text agents fall back on today's defaults; the image agent on its configured list.
    assert answered == ["gemini-3.8-flash", "gemini-3.5-flash-lite", "gemini-nano-banana-2.1"] * 5
    called = models_called(fake_gemini)
    # One failed call per retired model in all, not one per job: the process remembers.
    assert called.count("gemini-2.5-flash") == 1  # transcription found it gone; story skips it
    assert called.count("gemini-2.5-flash-image") == 1
    assert [r.status for r in fake_gemini.requests if r.model and r.model.startswith("gemini-2.")
            ] == [404, 404]
    logged = [r for r in caplog.records if r.getMessage() == "model unavailable"]
    assert {getattr(r, "model", None) for r in logged} == {
        "gemini-2.5-flash", "gemini-2.5-flash-image"}


def test_a_retired_model_is_tried_again_after_the_recheck_period(fake_gemini: FakeGemini) -> None:
    settings = settings_from(GEMINI_MODEL_STORY="gemini-3.6-flash",
                             GEMINI_MODEL_RECHECK_SECONDS="1")
    fake_gemini.models.retire(["gemini-3.6-flash"])
    story = GeminiStoryBuilder(settings)
    assert story.build(NOTES, "Porto", StorySettings()).usage.model == "gemini-3.5-flash-lite"
    assert story.model == "gemini-3.5-flash-lite"  # what rate limits and cache keys now use

    fake_gemini.models.revive(["gemini-3.6-flash"])  # Google brought it back (or a typo fixed)
    time.sleep(1.1)

    assert story.model == "gemini-3.6-flash"
    assert story.build(NOTES, "Porto", StorySettings()).usage.model == "gemini-3.6-flash"


def test_model_unavailable_without_a_fallback_names_the_model_and_setting(
    fake_gemini: FakeGemini,
) -> None:
    settings = settings_from(GEMINI_MODEL_IMAGE="gemini-2.5-flash-image",
                             GEMINI_FALLBACK_MODELS_IMAGE="none")

    for _ in range(3):
        with pytest.raises(AgentError) as info:
            GeminiIllustrator(settings).illustrate("A bridge", "pastel")
        error = info.value
        assert error.code == "model_unavailable" and not error.retryable
        assert "'gemini-2.5-flash-image'" in error.message and "GEMINI_MODEL_IMAGE" in error.message
        assert FAKE_GEMINI_KEY not in error.message

    assert fake_gemini.request_count == 1  # the later jobs fail without paying a call


def test_a_job_on_a_retired_model_fails_once_with_model_unavailable(
    session: Session, ctx: WorkerContext, user: User, fake_gemini: FakeGemini,
) -> None:
    retired = settings_from(GEMINI_MODEL_TRANSCRIPTION="gemini-2.5-flash",
                            GEMINI_FALLBACK_MODELS_TRANSCRIPTION="none")
    worker = dataclasses.replace(ctx, provider=build_provider(retired),
                                 settings=dataclasses.replace(ctx.settings, agents=retired))
    job = audio_job(session, worker, user)

    run_job(str(job.id), transcribe_media, context=worker)

    done = fresh(session, job)
    assert (done.status, done.attempts) == ("failed", 1)  # never retried with backoff
    assert done.error is not None and done.error["code"] == "model_unavailable"
    assert "GEMINI_MODEL_TRANSCRIPTION" in done.error["message"]


def test_the_answering_model_is_the_jobs_usage_and_metrics_label(
    session: Session, ctx: WorkerContext, user: User, fake_gemini: FakeGemini,
) -> None:
    from telemetry import MODEL_CALLS

    legacy = AgentSettings.from_env(LEGACY_ENV)
    worker = dataclasses.replace(ctx, provider=build_provider(legacy),
                                 settings=dataclasses.replace(ctx.settings, agents=legacy))
    before = MODEL_CALLS.labels("transcription", "gemini-3.8-flash", "ok")._value.get()
    job = audio_job(session, worker, user)

    run_job(str(job.id), transcribe_media, context=worker)

    done = fresh(session, job)
    assert done.status == "succeeded" and done.usage is not None
    assert done.usage["model"] == "gemini-3.8-flash"
    assert MODEL_CALLS.labels("transcription", "gemini-3.8-flash", "ok")._value.get() == before + 1


# --- thinking --------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "wanted", "sent"), [
    ("gemini-3.5-flash-lite", "lowest", {"thinking_level": "MINIMAL"}),
    ("gemini-3.8-flash", "lowest", {"thinking_level": "LOW"}),  # 3.8 Flash has no minimal
    ("gemini-3.8-flash", "minimal", {"thinking_level": "LOW"}),
    ("gemini-3.8-flash", "low", {"thinking_level": "LOW"}),
    ("gemini-3.6-flash", "minimal", {"thinking_level": "MINIMAL"}),
    ("gemini-3.1-pro-preview", "medium", {"thinking_level": "MEDIUM"}),
    ("gemini-2.5-flash", "lowest", {"thinking_budget": 0}),  # 2.x: a budget, never a level
    ("gemini-2.5-flash", "low", {"thinking_budget": 1024}),
    ("gemini-2.5-flash-image", "low", None),
    ("gemini-3.8-flash", "default", None),
])
def test_thinking_field_per_model_family(
    model: str, wanted: str, sent: dict[str, object] | None
) -> None:
    config = thinking_config(model, wanted)
    assert (None if config is None else config.model_dump(exclude_none=True, mode="json")) == sent


def test_every_agent_sends_a_thinking_config_the_api_accepts(fake_gemini: FakeGemini) -> None:
    """Each default model and each fallback, with every thinking setting: the fake answers 400
    for both fields at once, a level to a 2.x model, or a level the model does not take."""
    fake_gemini.models.revive(["gemini-2.5-flash"])
    for model in ("gemini-3.8-flash", "gemini-3.5-flash-lite", "gemini-3.6-flash",
                  "gemini-2.5-flash"):
        for thinking in ("lowest", "minimal", "low", "medium", "high", "default"):
            settings = settings_from(GEMINI_MODEL_STORY=model, GEMINI_THINKING_STORY=thinking,
                                     GEMINI_FALLBACK_MODELS_STORY="none")
            GeminiStoryBuilder(settings).build(NOTES, "Porto", StorySettings())
    assert fake_gemini.request_count == 24
    assert all(r.status == 200 for r in fake_gemini.requests)
    levels = [r.thinking.get("thinkingLevel") for r in fake_gemini.requests
              if r.model == "gemini-3.8-flash"]
    assert levels == ["LOW", "LOW", "LOW", "MEDIUM", "HIGH", None]


def test_the_fake_rejects_invalid_thinking_configs_as_the_api_does(
    fake_gemini: FakeGemini,
) -> None:
    settings = AgentSettings(gemini_api_key=FAKE_GEMINI_KEY)
    fake_gemini.models.revive(["gemini-2.5-flash"])
    invalid = [
        ("gemini-3.8-flash", types.ThinkingConfig(thinking_level=types.ThinkingLevel.LOW,
                                                  thinking_budget=512)),
        ("gemini-2.5-flash", types.ThinkingConfig(thinking_level=types.ThinkingLevel.LOW)),
        ("gemini-3.8-flash", types.ThinkingConfig(thinking_level=types.ThinkingLevel.MINIMAL)),
    ]
    for model, thinking in invalid:
        with pytest.raises(AgentError) as info:
            gemini_api.generate(settings, model=model, contents="hi", timeout_ms=5_000,
                            config=types.GenerateContentConfig(thinking_config=thinking))
        assert info.value.code == "upstream_bad_request" and info.value.upstream_status == 400


def test_thinking_settings_are_checked_at_start() -> None:
    with pytest.raises(ValueError, match="GEMINI_THINKING_STORY"):
        AgentSettings.from_env({"GEMINI_THINKING_STORY": "extreme"})
    route = ModelRoute.from_env({"GEMINI_FALLBACK_MODELS_STORY": " a , b,a "}, "story")
    assert route.chain == ("gemini-3.8-flash", "a", "b")
    assert ModelRoute.from_env({"GEMINI_FALLBACK_MODELS_STORY": "none"}, "story").fallbacks == ()


# --- start-up check, /ready, lifetales models ------------------------------------------------


def test_the_start_up_check_asks_once_per_model_and_logs_missing_ones(
    fake_gemini: FakeGemini, caplog: pytest.LogCaptureFixture
) -> None:
    settings = AgentSettings.from_env(LEGACY_ENV)

    with caplog.at_level(logging.INFO, logger="workers.model_check"):
        log_model_checks(settings)

    chains = {m for route in settings.routes for m in route.chain}
    assert sorted(fake_gemini.model_lookups) == sorted(chains)  # one models.get per model
    errors = [(r.getMessage(), getattr(r, "model", None)) for r in caplog.records
              if r.levelno == logging.ERROR]
    assert ("configured model not found", "gemini-2.5-flash") in errors
    assert ("configured model not found", "gemini-2.5-flash-image") in errors
    assert ("agent has no working model", "gemini-2.5-flash-image") in errors
    # Remembered: the first transcription goes straight to the fallback.
    GeminiTranscriber(settings).transcribe(b"RIFF", "audio/wav")
    assert [r.model for r in fake_gemini.requests] == ["gemini-3.8-flash"]


def ready_app(settings: Settings, session_factory: sessionmaker[Session], agents: AgentSettings
              ) -> Flask:
    from api import create_app

    return create_app(dataclasses.replace(settings, agents=agents),
                      session_factory=session_factory)


def test_ready_reports_each_agents_model(
    settings: Settings, session_factory: sessionmaker[Session], fake_gemini: FakeGemini,
) -> None:
    offline = ready_app(settings, session_factory, AgentSettings()).test_client().get("/ready")
    assert offline.status_code == 200
    assert {m["state"] for m in offline.get_json()["models"].values()} == {"offline"}

    current = ready_app(settings, session_factory, AgentSettings(gemini_api_key=FAKE_GEMINI_KEY))
    body = current.test_client().get("/ready").get_json()
    assert body["status"] == "ready"
    assert body["models"]["story"] == {
        "model": "gemini-3.8-flash", "fallbacks": ["gemini-3.5-flash-lite"], "state": "ok",
        "answering": "gemini-3.8-flash",
        "found": {"gemini-3.8-flash": True, "gemini-3.5-flash-lite": True}}
    lookups = len(fake_gemini.model_lookups)
    current.test_client().get("/ready")
    assert len(fake_gemini.model_lookups) == lookups  # remembered, not asked at every probe

    availability.clear()
    legacy = ready_app(settings, session_factory, AgentSettings.from_env(LEGACY_ENV))
    answer = legacy.test_client().get("/ready")
    assert answer.status_code == 503
    models = answer.get_json()["models"]
    assert models["transcription"]["state"] == "fallback"
    assert models["transcription"]["answering"] == "gemini-3.8-flash"
    assert models["image"]["state"] == "unavailable"
    assert models["image"]["found"] == {"gemini-2.5-flash-image": False}


def run_models_cli(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    lifetales = Path(sys.executable).parent / "lifetales"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GEMINI_")}
    return subprocess.run([str(lifetales), "models", "--json"], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=60, check=False)


def test_lifetales_models_before_a_deploy(fake_gemini: FakeGemini) -> None:
    base = {"GOOGLE_GEMINI_BASE_URL": fake_gemini.base_url}

    offline = run_models_cli({})
    assert offline.returncode == 0 and json.loads(offline.stdout)["provider"] == "offline"

    current = run_models_cli({**base, "GEMINI_API_KEY": FAKE_GEMINI_KEY})
    assert current.returncode == 0, current.stderr
    report = {a["agent"]: a for a in json.loads(current.stdout)["agents"]}
    assert {a["state"] for a in report.values()} == {"ok"}
    story = report["story"]["models"][0]
    assert story["model"] == "gemini-3.8-flash" and story["found"] is True
    assert story["inputTokenLimit"] == 1_048_576 and "generateContent" in story["supportedMethods"]

    legacy = run_models_cli({**base, **LEGACY_ENV})
    assert legacy.returncode == 1
    report = {a["agent"]: a for a in json.loads(legacy.stdout)["agents"]}
    assert report["story"]["state"] == "fallback"
    assert report["image"]["state"] == "unavailable"
    assert "no working model for: image" in legacy.stderr
    assert FAKE_GEMINI_KEY not in legacy.stdout + legacy.stderr
