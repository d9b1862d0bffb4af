"""How fast a finished, illustrated story arrives: the platform's streamed, pipelined story
against the frontend's sequential flow (whole story, then one image after another), both with
the same fake Gemini in the same run.

    .venv/bin/python bench/story_pipeline.py [--notes 8] [--story-seconds 6] [--image-seconds 4]
        [--thinking LOW=0.6,MEDIUM=2,HIGH=5]

With ``--thinking`` the fake "thinks" before its first token for as long as it says for the
level the story call sends (``GEMINI_THINKING_STORY``, ``low`` by default): the first-chapter
figure then includes what the thinking setting would cost. Google publishes no such latencies,
so by default the fake does not think (thinking is free), as before.

Needs PostgreSQL (127.0.0.1:5432) and Redis; starts and stops everything else itself.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.config import AgentSettings  # noqa: E402 - after the path set-up above
from agents.illustration import GeminiIllustrator  # noqa: E402
from agents.story_builder import GeminiStoryBuilder  # noqa: E402
from agents.types import NoteInput, StorySettings  # noqa: E402
from tests.fakes.gemini_server import FakeGemini  # noqa: E402
from tests.platform import Client, running_stack  # noqa: E402

NOTE_TEXT = "We walked along the river at dawn and watched the fishing boats come in."


def sequential_frontend_flow(base_url: str, notes: int) -> float:
    """What the browser does today: the whole story, then each illustration in turn."""
    import os

    os.environ["GOOGLE_GEMINI_BASE_URL"] = base_url
    settings = AgentSettings(gemini_api_key="bench-key")
    inputs = [NoteInput(id=f"note-{i}", timestamp_ms=1_700_000_000_000 + i * 86_400_000,
                        title=f"Day {i + 1}", text_content=NOTE_TEXT) for i in range(notes)]
    started = time.monotonic()
    story = GeminiStoryBuilder(settings).build(inputs, "Porto", StorySettings())
    illustrator = GeminiIllustrator(settings)
    for chapter in story.chapters:
        illustrator.illustrate(chapter.illustration_prompt or chapter.title, "illustration")
    return time.monotonic() - started


def platform_flow(client: Client, notes: int) -> tuple[float, float, int]:
    """(first chapter event, story complete) in seconds after submit, and illustrations seen."""
    space = client.call("POST", "/spaces", json={"title": "Porto"}, expect=201).json()["id"]
    for i in range(notes):
        client.call("POST", f"/spaces/{space}/notes", expect=201, json={
            "title": f"Day {i + 1}", "textContent": NOTE_TEXT,
            "timestamp": 1_700_000_000_000 + i * 86_400_000})
    started = time.monotonic()
    job = client.call("POST", f"/spaces/{space}/story", json={"force": True}, expect=202).json()
    first_chapter = None
    illustrations = 0
    for event, data in client.events(job["id"]):
        if event == "chapter" and first_chapter is None:
            first_chapter = time.monotonic() - started
        if event == "illustration":
            illustrations += 1
        if event == "done" and data["status"] != "succeeded":
            raise SystemExit(f"the story job ended {data['status']}")
    return first_chapter or float("nan"), time.monotonic() - started, illustrations


def thinking_profile(text: str) -> dict[str, float]:
    """``LOW=0.6,HIGH=5`` -> seconds of thinking before the first token, per level."""
    pairs = (item.split("=", 1) for item in text.split(",") if item.strip())
    return {level.strip().upper(): float(seconds) for level, seconds in pairs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notes", type=int, default=8)
    parser.add_argument("--story-seconds", type=float, default=6.0)
    parser.add_argument("--image-seconds", type=float, default=4.0)
    # Seconds before the first token per thinking level: an assumption to test against, not a
    # measurement of Google's models.
    parser.add_argument("--thinking", type=thinking_profile, default={})
    args = parser.parse_args()

    with FakeGemini(story_stream_seconds=args.story_seconds) as gemini, \
            tempfile.TemporaryDirectory(prefix="lifetales-bench-") as tmp:
        gemini.set_latency(args.image_seconds, "illustration")
        gemini.thinking_seconds.update(args.thinking)
        sequential = sequential_frontend_flow(gemini.base_url, args.notes)
        with running_stack(Path(tmp), gemini) as stack:
            stack.services.start_worker("bench", concurrency=max(16, args.notes * 2))
            first, complete, images = platform_flow(stack.client, args.notes)

    ratio = complete / sequential
    print(f"story: {args.notes} moments, {args.story_seconds:g} s streamed story, "
          f"{args.image_seconds:g} s per image, thinking before the first token "
          f"{args.thinking or 'none'}")
    print(f"frontend sequential flow     {sequential:6.2f} s")
    print(f"platform: first chapter      {first:6.2f} s   target <= 1.50 s")
    print(f"platform: story complete     {complete:6.2f} s   ({images} illustrations)")
    print(f"ratio platform / sequential  {ratio:6.2f}     target <= 0.30")
    return 0 if ratio <= 0.30 and first <= 1.5 else 1


if __name__ == "__main__":
    sys.exit(main())
