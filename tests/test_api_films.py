"""The films API (``POST /spaces/{id}/film``, ``GET /spaces/{id}/film``, ``/films``), and a
film made over HTTP by the platform's real processes, whose render worker is killed mid-render
and replaced: the reaper re-queues the render, it starts again, and the film is whole."""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path

import pytest
import requests
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from models import Film, Space, Story
from models.base import utcnow
from tests.conftest import assert_error, register
from tests.fakes.gemini_server import FakeGemini
from tests.platform import running_stack
from tests.test_api_rate_limits import AppFactory, assert_refused, limited_app
from tests.test_film_render import ffprobe

__all__ = ["limited_app"]


def space_with_story(client: FlaskClient, auth: dict[str, str], session: Session,
                     *, story: bool = True) -> str:
    space_id = client.post("/api/v1/spaces", headers=auth, json={"title": "Porto"}).get_json()[
        "id"]
    if story:
        space = session.get(Space, uuid.UUID(space_id))
        assert space is not None
        session.add(Story(space_id=space.id, version=1, job_id=uuid.uuid4(), status="ready",
                          settings={}))
        space.current_story_version = 1
        session.commit()
    return space_id


def test_a_film_needs_a_story(client: FlaskClient, session: Session) -> None:
    auth = register(client)
    space = space_with_story(client, auth, session, story=False)

    assert_error(client.post(f"/api/v1/spaces/{space}/film", headers=auth, json={}), 422,
                 "no story yet")
    assert_error(client.get(f"/api/v1/spaces/{space}/film", headers=auth), 404,
                 "no film has been made")
    assert client.get(f"/api/v1/spaces/{space}/films", headers=auth).get_json() == []


def test_post_film_answers_202_with_a_film_job_of_the_current_story(
    client: FlaskClient, session: Session,
) -> None:
    auth = register(client)
    space = space_with_story(client, auth, session)
    client.put("/api/v1/settings", headers=auth, json={
        "narrativeTone": "poetic", "storyMode": "chapter", "creativity": 1, "imageStyle":
        "pastel", "imagesPerChapter": 1, "voiceStyle": "calm", "backgroundMusic": True})

    response = client.post(f"/api/v1/spaces/{space}/film", headers=auth,
                           json={"settings": {"backgroundMusic": False}, "force": True})

    assert response.status_code == 202, response.get_json()
    job = response.get_json()
    assert job["kind"] == "film" and response.headers["Location"].endswith(job["id"])
    assert job["input"]["settings"] == {"voiceStyle": "calm", "backgroundMusic": False,
                                        "narrativeTone": "poetic"}
    assert job["input"]["storyVersion"] == 1 and job["input"]["force"] is True
    for bad in ({"settings": {"voiceStyle": "robot"}}, {"settings": {"imageStyle": "pastel"}},
                {"force": "sometimes"}):
        assert client.post(f"/api/v1/spaces/{space}/film", headers=auth,
                           json=bad).status_code == 422


def test_get_film_shows_the_newest_ready_one_and_films_every_version(
    client: FlaskClient, session: Session,
) -> None:
    auth = register(client)
    space_id = space_with_story(client, auth, session)
    space = session.get(Space, uuid.UUID(space_id))
    assert space is not None
    story = space.stories[0]
    for version, status in ((1, "ready"), (2, "ready"), (3, "rendering")):
        session.add(Film(space_id=space.id, story_id=story.id, version=version,
                         job_id=uuid.uuid4(), status=status, settings={"voiceStyle": "warm"},
                         video_url=f"http://localhost/media/films/{version}/video.mp4"
                         if status == "ready" else None,
                         duration_seconds=42.5 if status == "ready" else None,
                         finished_at=utcnow() if status == "ready" else None))
    session.commit()

    current = client.get(f"/api/v1/spaces/{space_id}/film", headers=auth).get_json()
    versions = client.get(f"/api/v1/spaces/{space_id}/films", headers=auth).get_json()
    older = client.get(f"/api/v1/spaces/{space_id}/film?version=1", headers=auth).get_json()

    assert current["version"] == 2 and current["current"] is True
    assert current["videoUrl"].endswith("/films/2/video.mp4")
    assert current["durationSeconds"] == 42.5 and current["storyVersion"] == 1
    assert [(f["version"], f["status"], f["current"]) for f in versions] == [
        (3, "rendering", False), (2, "ready", True), (1, "ready", False)]
    assert older["version"] == 1 and older["current"] is False
    assert_error(client.get(f"/api/v1/spaces/{space_id}/film?version=9", headers=auth), 404,
                 "film version 9")


def test_films_have_their_own_budget(limited_app: AppFactory) -> None:
    app = limited_app(film="1/hour")
    client = app.test_client()
    auth = register(client)
    space_id = client.post("/api/v1/spaces", headers=auth, json={"title": "P"}).get_json()["id"]
    with app.app_context():
        from api.state import db

        space = db().get(Space, uuid.UUID(space_id))
        assert space is not None
        db().add(Story(space_id=space.id, version=1, job_id=uuid.uuid4(), status="ready",
                       settings={}))
        space.current_story_version = 1
        db().commit()

    assert client.post(f"/api/v1/spaces/{space_id}/film", headers=auth, json={}).status_code == 202
    assert_refused(client.post(f"/api/v1/spaces/{space_id}/film", headers=auth, json={}),
                   "1/hour films")


# --- over HTTP, with a render worker killed mid-render ---------------------------------------


def render_ffmpeg_pids(render_id: str) -> list[int]:
    """ffmpeg processes of one render job (their working directory is its folder)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if b"ffmpeg" in (proc / "cmdline").read_bytes() and f"lifetales-render-{render_id}" \
                    in str((proc / "cwd").readlink()):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.mark.integration
@pytest.mark.timeout(600)  # a story, narrations and two renders on a 2-core machine
def test_a_film_over_http_survives_a_killed_render_worker(tmp_path: Path) -> None:
    with FakeGemini() as gemini, running_stack(tmp_path, gemini) as stack:
        gemini.script_narration_words = 60  # ~24 s a scene: a render long enough to be killed
        services, client = stack.services, stack.client
        services.start_worker("io", concurrency=8,
                              queues="transcription,illustration,story,speech,maintenance")
        services.start_worker("render", concurrency=1, queues="render")
        space = client.call("POST", "/spaces", json={"title": "Porto"}, expect=201).json()["id"]
        for day in range(4):
            client.call("POST", f"/spaces/{space}/notes", expect=201, json={
                "title": f"Day {day + 1}", "textContent": "Sardines by the river at dusk.",
                "timestamp": 1_700_000_000_000 + day * 86_400_000})
        story = client.call("POST", f"/spaces/{space}/story", json={}, expect=202).json()
        assert client.wait_job(story["id"], timeout=120)["status"] == "succeeded"

        film_job = client.call("POST", f"/spaces/{space}/film", json={}, expect=202).json()
        deadline = time.monotonic() + 180
        renders: list[dict] = []
        while not renders or not render_ffmpeg_pids(renders[0]["id"]):
            assert time.monotonic() < deadline, services.log("render")
            time.sleep(0.2)
            renders = client.call("GET", f"/jobs?parentId={film_job['id']}&kind=render").json()
        services.kill("render")  # SIGKILL to the worker's process group, mid-render
        time.sleep(1)
        assert render_ffmpeg_pids(renders[0]["id"]) == []  # ffmpeg does not outlive its worker
        services.start_worker("render2", concurrency=1, queues="render")

        done = client.wait_job(film_job["id"], timeout=300)
        assert done["status"] == "succeeded", done
        renders = client.call("GET", f"/jobs?parentId={film_job['id']}&kind=render").json()
        (render,) = renders
        assert render["attempts"] == 2 and render["status"] == "succeeded"
        film = client.call("GET", f"/spaces/{space}/film").json()
        assert film["status"] == "ready" and film["videoUrl"] == done["result"]["videoUrl"]

        video = tmp_path / "film.mp4"
        with requests.get(film["videoUrl"], timeout=60) as response:
            assert response.status_code == 200
            assert response.headers["Content-Type"] == "video/mp4"
            video.write_bytes(response.content)
        ranged = requests.get(film["videoUrl"], headers={"Range": "bytes=100-199"}, timeout=30)
        assert ranged.status_code == 206 and len(ranged.content) == 100  # players can seek
        probe = ffprobe(video)
        kinds = {s["codec_type"]: s["codec_name"] for s in probe["streams"]}
        assert kinds == {"video": "h264", "audio": "aac", "subtitle": "mov_text"}
        assert float(probe["format"]["duration"]) == pytest.approx(film["durationSeconds"],
                                                                   abs=1)
        # Nothing was left behind by the killed attempt.
        assert not list(Path(tempfile.gettempdir()).glob(f"lifetales-render-{render['id']}*"))
