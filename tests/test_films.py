"""Films as jobs: a story version in, a narrated MP4 out, through the film job (script), its
narration children and its render child, run by ``run_job`` against real PostgreSQL, real
ffmpeg and the fake Gemini (the real SDK over HTTP) or the offline provider."""

from __future__ import annotations

import dataclasses
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from agents.config import AgentSettings
from agents.media.local import LocalMediaStorage
from agents.offline import OfflineIllustrator
from agents.provider import build_provider
from config import FilmSettings, Settings
from models import Chapter, Film, Job, JobEvent, Media, Note, Space, Story, User
from tests.conftest import FAKE_GEMINI_KEY
from tests.fakes.gemini_server import FakeGemini
from tests.film_media import photo, png_bomb, tone
from tests.test_film_render import ffprobe, volume
from tests.test_worker_jobs import fresh, user
from workers.context import WorkerContext
from workers.dispatch import create_job
from workers.parents import cancel_job
from workers.runner import Handler, run_job
from workers.tasks.film import make_film
from workers.tasks.narration import narrate
from workers.tasks.render import render

__all__ = ["user"]

HANDLERS: dict[str, Handler] = {"film": make_film, "narration": narrate, "render": render}
SENTENCE = "We walked along the river while the light turned gold over the old town."


def film_context(settings: Settings, session_factory: Any, tmp_path: Path,
                 agents: AgentSettings, music: Path | None = None) -> WorkerContext:
    from workers.sending import install_enqueue_after_commit

    install_enqueue_after_commit(session_factory)
    film = FilmSettings.from_env({"MUSIC_LIBRARY_DIR": str(music)} if music else {})
    return WorkerContext(
        settings=dataclasses.replace(settings, agents=agents, film=film),
        engine=None,  # type: ignore[arg-type]
        session_factory=session_factory,
        provider=build_provider(agents),
        storage=LocalMediaStorage(tmp_path / "media", "http://localhost/media"),
    )


@pytest.fixture
def fake_ctx(settings: Settings, session_factory: Any, tmp_path: Path,
             fake_gemini: FakeGemini) -> WorkerContext:
    return film_context(settings, session_factory, tmp_path, AgentSettings(
        gemini_api_key=FAKE_GEMINI_KEY, story_timeout_ms=5000, tts_timeout_ms=5000))


@pytest.fixture
def offline_ctx(settings: Settings, session_factory: Any, tmp_path: Path) -> WorkerContext:
    return film_context(settings, session_factory, tmp_path, AgentSettings())


def story_of(session: Session, ctx: WorkerContext, owner: User, chapters: int,
             photos: dict[int, list[Path]] | None = None) -> tuple[Space, Story]:
    """A space with a ready story version: ``chapters`` chapters, each with a drawn image, or
    the user's photos where ``photos`` gives some."""
    space = Space(owner_id=owner.id, title="Porto weekend")
    session.add(space)
    session.flush()
    story = Story(space_id=space.id, version=1, job_id=uuid.uuid4(), status="ready",
                  settings={})
    session.add(story)
    session.flush()
    drawing = OfflineIllustrator().illustrate("A bridge over the river", "pastel")
    for position in range(chapters):
        note = Note(space_id=space.id, timestamp_ms=1_700_000_000_000 + position,
                    text_content=SENTENCE)
        session.add(note)
        session.flush()
        image_ids: list[str] = []
        for number, path in enumerate((photos or {}).get(position, [])):
            media_id = uuid.uuid4()
            key = f"image/{media_id}"
            stored = ctx.storage.save(key, path.read_bytes(), "image/png")
            session.add(Media(id=media_id, owner_id=owner.id, note_id=note.id, kind="image",
                              storage_key=key, url=stored.url, mime_type="image/png",
                              size=stored.size, sha256=f"{number}"))
            image_ids.append(str(media_id))
        drawn = ctx.storage.save(f"illustrations/{uuid.uuid4()}", drawing.data, "image/png")
        session.add(Chapter(story_id=story.id, position=position, title=f"Day {position + 1}",
                            content=f"{SENTENCE} Chapter {position + 1}.",
                            illustration_prompt="A bridge over the river",
                            source_note_id=note.id, user_image_ids=image_ids,
                            generated_image_url=None if image_ids else drawn.url))
    space.current_story_version = 1
    session.commit()
    return space, story


def film_job(session: Session, owner: User, space: Space, story: Story, **settings: Any) -> Job:
    job = create_job(session, owner_id=owner.id, kind="film", input={
        "spaceId": str(space.id), "storyId": str(story.id), "storyVersion": story.version,
        "settings": {"voiceStyle": "warm", "backgroundMusic": False,
                     "narrativeTone": "cinematic", **settings}})
    session.commit()
    return job


def drain(session: Session, ctx: WorkerContext, *, until: Callable[[], bool] | None = None,
          rounds: int = 50) -> None:
    """Run queued film, narration and render jobs in this thread until none is left."""
    for _ in range(rounds):
        queued = session.execute(select(Job.id, Job.kind).where(
            Job.status == "queued", Job.kind.in_(HANDLERS)).order_by(Job.created_at)).all()
        done = until is not None and until()
        # The test's session shares the jobs' connection: no transaction of its own may stay
        # open around theirs (its rollback would undo their commits).
        session.rollback()
        if not queued or done:
            return
        for job_id, kind in queued:
            run_job(str(job_id), HANDLERS[kind], context=ctx)
    raise AssertionError("jobs still queued after draining")


def max_volume_db(path: Path) -> float:
    return volume(path)[1]


def local_file(ctx: WorkerContext, url: str) -> Path:
    storage = ctx.storage
    assert isinstance(storage, LocalMediaStorage)
    path = storage.resolve(url.removeprefix("http://localhost/media/"))
    assert path is not None, url
    return path


def events_of(session: Session, job_id: uuid.UUID) -> list[tuple[str, dict[str, Any]]]:
    return [(e.type, e.data) for e in session.scalars(
        select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id))]


# --- the whole film --------------------------------------------------------------------------


def test_a_film_through_the_fake_gemini_with_music(
    session: Session, settings: Settings, session_factory: Any, tmp_path: Path,
    fake_gemini: FakeGemini, user: User,
) -> None:
    music = tmp_path / "music"
    (music / "calm").mkdir(parents=True)
    tone(music / "calm" / "bed.wav", 30.0, 220.0)  # the fake's scripts ask for a calm mood
    ctx = film_context(settings, session_factory, tmp_path, AgentSettings(
        gemini_api_key=FAKE_GEMINI_KEY, tts_timeout_ms=5000), music=music)
    space, story = story_of(session, ctx, user, chapters=3,
                            photos={1: [photo(tmp_path / "p1.png", seed=1),
                                        photo(tmp_path / "p2.png", seed=2)]})
    job = film_job(session, user, space, story, backgroundMusic=True)

    drain(session, ctx)

    done = fresh(session, job)
    assert done.status == "succeeded", done.error
    result = done.result or {}
    film = session.scalar(select(Film).where(Film.job_id == job.id))
    assert film is not None and film.status == "ready" and film.version == 1
    assert result["videoUrl"] == film.video_url and result["hasMusic"] is True
    assert [s["chapterId"] for s in result["scenes"]] == [str(c.id) for c in story.chapters]
    assert done.usage is not None and done.usage["model"] == "gemini-3.8-flash"
    kinds = [r.kind for r in fake_gemini.requests]
    assert kinds.count("script") == 1 and kinds.count("speech") == 3

    video = local_file(ctx, result["videoUrl"])
    probe = ffprobe(video)
    streams = {s["codec_type"]: s for s in probe["streams"]}
    assert streams["video"]["codec_name"] == "h264" and streams["audio"]["codec_name"] == "aac"
    assert (streams["video"]["width"], streams["video"]["height"]) == (1280, 720)
    assert streams["video"]["pix_fmt"] == "yuv420p"
    assert streams["subtitle"]["codec_name"] == "mov_text"
    assert float(probe["format"]["duration"]) == pytest.approx(result["durationSeconds"], abs=1)
    assert result["scenes"][-1]["endSeconds"] == pytest.approx(result["durationSeconds"], abs=1)
    assert max_volume_db(video) > -30  # the fake's speech, spoken
    assert result["sizeBytes"] == video.stat().st_size
    vtt = local_file(ctx, result["subtitlesUrl"]).read_text()
    assert vtt.startswith("WEBVTT") and "-->" in vtt
    assert local_file(ctx, result["posterUrl"]).read_bytes()[:2] == b"\xff\xd8"  # a JPEG

    events = events_of(session, job.id)
    steps = [d["step"] for t, d in events if t == "progress"]
    for step in ("script", "narration", "render", "upload", "done"):
        assert step in steps
    assert steps.index("script") < steps.index("narration") < steps.index("render")
    assert [t for t, _ in events].count("narration") == 3
    assert ("script", film.script) in events


def test_the_offline_provider_makes_a_playable_film(
    session: Session, offline_ctx: WorkerContext, user: User,
) -> None:
    space, story = story_of(session, offline_ctx, user, chapters=2)
    job = film_job(session, user, space, story)

    drain(session, offline_ctx)

    done = fresh(session, job)
    assert done.status == "succeeded", done.error
    video = local_file(offline_ctx, (done.result or {})["videoUrl"])
    streams = {s["codec_type"] for s in ffprobe(video)["streams"]}
    assert {"video", "audio", "subtitle"} <= streams
    assert (done.result or {})["hasMusic"] is False  # no library configured: no music
    assert max_volume_db(video) > -40  # espeak-ng spoke the narrations (.ci/run installs it)


def test_an_identical_film_comes_from_the_cache_without_rendering(
    session: Session, offline_ctx: WorkerContext, user: User,
) -> None:
    space, story = story_of(session, offline_ctx, user, chapters=2)
    first = film_job(session, user, space, story)
    drain(session, offline_ctx)
    renders = session.scalar(select(Job.id).where(Job.kind == "render"))

    second = film_job(session, user, space, story)
    drain(session, offline_ctx)
    other = film_job(session, user, space, story, voiceStyle="calm")  # not identical
    drain(session, offline_ctx)

    cached, made = fresh(session, second), fresh(session, first)
    assert cached.status == "succeeded" and (cached.result or {})["cached"] is True
    assert (cached.result or {})["videoUrl"] == (made.result or {})["videoUrl"]
    assert session.scalars(select(Job).where(Job.parent_id == second.id)).all() == []
    assert renders is not None
    assert (fresh(session, other).result or {})["cached"] is False
    versions = session.scalars(select(Film.version).where(Film.space_id == space.id)
                               .order_by(Film.version)).all()
    assert versions == [1, 2, 3]


def test_a_narration_failing_after_its_retries_fails_the_film_with_its_code(
    session: Session, fake_ctx: WorkerContext, fake_gemini: FakeGemini, user: User,
) -> None:
    space, story = story_of(session, fake_ctx, user, chapters=3)
    fake_gemini.fail_next("speech", status=400)  # not retryable: the first attempt is the last
    job = film_job(session, user, space, story)

    drain(session, fake_ctx)

    done = fresh(session, job)
    assert done.status == "failed" and done.error is not None
    assert done.error["code"] == "upstream_bad_request"
    assert "narration of scene" in done.error["message"]
    assert session.scalar(select(Job.id).where(Job.kind == "render")) is None
    film = session.scalar(select(Film).where(Film.job_id == job.id))
    assert film is not None and film.status == "failed"


def test_a_hostile_photo_is_left_out_of_its_scene_with_a_clear_code(
    session: Session, offline_ctx: WorkerContext, user: User, tmp_path: Path,
) -> None:
    bomb = png_bomb(tmp_path / "bomb.png", 40_000, 40_000)
    space, story = story_of(session, offline_ctx, user, chapters=2,
                            photos={0: [bomb, photo(tmp_path / "ok.png")]})
    job = film_job(session, user, space, story)

    drain(session, offline_ctx)

    done = fresh(session, job)
    assert done.status == "succeeded", done.error  # the worker and the film survive it
    render = session.scalar(select(Job).where(Job.kind == "render", Job.parent_id == job.id))
    assert render is not None and render.result is not None
    (rejected,) = render.result["mediaRejected"]
    assert rejected["code"] == "media_rejected"
    assert rejected["chapterId"] == str(story.chapters[0].id)


def test_too_many_scenes_fail_before_any_narration(
    session: Session, offline_ctx: WorkerContext, user: User,
) -> None:
    space, story = story_of(session, offline_ctx, user, chapters=61)
    job = film_job(session, user, space, story)

    drain(session, offline_ctx)

    done = fresh(session, job)
    assert done.status == "failed" and done.error is not None
    assert done.error["code"] == "too_many_scenes"
    assert session.scalar(select(Job.id).where(Job.parent_id == job.id)) is None


# --- cancel -----------------------------------------------------------------------------------


def ffmpeg_processes(job_id: uuid.UUID) -> list[int]:
    """ffmpeg processes started by this render job (their working directory is its folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            cwd = str((proc / "cwd").readlink())
        except OSError:
            continue
        if b"ffmpeg" in cmdline and f"lifetales-render-{job_id}" in cwd:
            found.append(int(proc.name))
    return found


def test_cancel_mid_render_kills_ffmpeg_and_removes_its_files(
    session: Session, fake_ctx: WorkerContext, fake_gemini: FakeGemini, user: User,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from workers.tasks.render import RenderRun

    fake_gemini.script_narration_words = 100  # ~40 s a scene: a render that takes a while
    space, story = story_of(session, fake_ctx, user, chapters=8)
    job = film_job(session, user, space, story)
    drain(session, fake_ctx, until=lambda: session.scalar(
        select(Job.id).where(Job.kind == "render")) is not None)
    render_job = session.scalar(select(Job).where(Job.kind == "render"))
    assert render_job is not None
    session.rollback()
    seen: dict[str, Any] = {}
    report = RenderRun.on_progress

    def cancel_midway(self: RenderRun, fraction: float) -> None:
        report(self, fraction)
        if fraction > 0.05 and "ffmpeg" not in seen:
            # The user cancels the film while ffmpeg encodes (from another session).
            seen["ffmpeg"] = ffmpeg_processes(render_job.id)
            seen["at"] = fraction
            with fake_ctx.session_factory() as other:
                cancel_job(other, fresh(other, job))

    monkeypatch.setattr(RenderRun, "on_progress", cancel_midway)
    run_job(str(render_job.id), render, context=fake_ctx)

    assert seen["ffmpeg"], "the render was not running ffmpeg when canceled"
    assert seen["at"] < 0.9
    assert ffmpeg_processes(render_job.id) == []
    assert fresh(session, render_job).status == "canceled"
    assert fresh(session, job).status == "canceled"
    assert not list(Path(tempfile.gettempdir()).glob(f"lifetales-render-{render_job.id}*"))
    film = session.scalar(select(Film).where(Film.job_id == job.id))
    assert film is not None and film.status == "canceled" and film.video_url is None


# --- retention --------------------------------------------------------------------------------


def test_film_files_live_while_a_film_shows_them_and_go_with_their_space(
    session: Session, offline_ctx: WorkerContext, user: User,
) -> None:
    from datetime import timedelta

    from models.base import utcnow
    from workers.retention import delete_released_files, referenced_keys, stored_keys_of_space

    space, story = story_of(session, offline_ctx, user, chapters=1)
    job = film_job(session, user, space, story)
    drain(session, offline_ctx)
    keys = [k for k in stored_keys_of_space(session, space.id) if k.startswith("films/")]
    assert sorted(k.rsplit("/", 1)[1] for k in keys) == ["poster", "subtitles", "video"]
    stored = {s.key for s in offline_ctx.storage.iter_keys("films/")}
    assert set(keys) <= stored
    later = utcnow() + timedelta(days=400)  # past every cache entry's expiry
    assert referenced_keys(session, keys, now=later, include_jobs=False) == set(keys)

    session.delete(space)  # the films go with it (cascade)
    session.commit()
    assert fresh(session, job).status == "succeeded"
    deleted = delete_released_files(session, offline_ctx.storage, keys)

    assert deleted == 3
    assert not {s.key for s in offline_ctx.storage.iter_keys("films/")} & set(keys)
