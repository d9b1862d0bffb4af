"""The film script agent against the fake Gemini (the real SDK over HTTP), and the offline one:
one scene per chapter, repairs where they are safe, one corrective retry, then
``invalid_model_output``."""

from __future__ import annotations

import json

import pytest

from agents.config import AgentSettings
from agents.errors import AgentError
from agents.film_script import (
    MAX_SCENES,
    SCENE_MAX_S,
    SCENE_MIN_S,
    GeminiScriptWriter,
    script_dict,
    script_from_dict,
)
from agents.offline import OfflineScriptWriter
from agents.types import ChapterInput
from tests.conftest import FAKE_GEMINI_KEY
from tests.fakes.gemini_server import FakeGemini

CHAPTERS = (
    ChapterInput(id="c-1", title="Arrival", content="We landed in Porto at dawn.",
                 illustration_prompt="A plane over the Douro at dawn"),
    ChapterInput(id="c-2", title="The bridge", content="We crossed the Dom Luis bridge."),
    ChapterInput(id="c-3", title="Dinner", content="Grilled sardines by the river."),
)


@pytest.fixture
def writer(fake_gemini: FakeGemini) -> GeminiScriptWriter:
    return GeminiScriptWriter(AgentSettings(gemini_api_key=FAKE_GEMINI_KEY))


def scene(chapter_id: str, **fields: object) -> dict[str, object]:
    return {"chapterId": chapter_id, "narrationText": f"About {chapter_id}.",
            "visualDescription": "A wide shot", "durationSeconds": 12, "transition": "fade",
            **fields}


def answer(scenes: list[dict[str, object]], **fields: object) -> str:
    return json.dumps({"title": "Porto", "totalDurationSeconds": 99, "musicMood": "calm",
                       "scenes": scenes, **fields})


def test_one_scene_per_chapter_through_the_sdk(
    writer: GeminiScriptWriter, fake_gemini: FakeGemini
) -> None:
    result = writer.write(CHAPTERS, "Porto weekend", "poetic")

    script = result.script
    assert [s.chapter_id for s in script.scenes] == ["c-1", "c-2", "c-3"]
    assert all(SCENE_MIN_S <= s.duration_seconds <= SCENE_MAX_S for s in script.scenes)
    assert script.total_duration_seconds == sum(s.duration_seconds for s in script.scenes)
    assert script.music_mood == "calm" and {s.transition for s in script.scenes} <= {
        "fade", "slide", "zoom"}
    (request,) = fake_gemini.requests
    assert request.kind == "script"
    assert request.path.endswith("/gemini-3.8-flash:generateContent")
    scenes = request.generation_config["responseSchema"]["properties"]["scenes"]
    # One scene per chapter, required by the schema (google-genai sends it in snake_case).
    assert scenes["min_items"] == scenes["max_items"] == 3
    assert "chapter: c-2" in request.prompt_text and "Tone: poetic" in request.prompt_text
    assert request.thinking == {"thinkingLevel": "LOW"}
    assert result.usage.model == "gemini-3.8-flash" and result.usage.output_tokens > 0
    assert script_from_dict(script_dict(script)) == script


def test_safe_repairs_are_made_without_a_second_call(
    writer: GeminiScriptWriter, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply_next("script", answer([
        scene("c-2", durationSeconds=90, transition="wipe"),  # out of order, out of range
        scene("c-1", narrationText="", visualDescription=""),  # empty: from the chapter
        scene("c-3", durationSeconds="soon"),
    ], musicMood="jazzy"))

    script = writer.write(CHAPTERS, "Porto", "cinematic").script

    assert fake_gemini.request_count == 1
    first, second, third = script.scenes
    assert (first.chapter_id, first.narration_text) == ("c-1", "We landed in Porto at dawn.")
    assert first.visual_description == "A plane over the Douro at dawn"
    assert (second.duration_seconds, second.transition) == (SCENE_MAX_S, "fade")
    assert third.duration_seconds == SCENE_MIN_S  # estimated from a short narration
    assert script.music_mood == "neutral"
    assert script.total_duration_seconds == SCENE_MAX_S + first.duration_seconds + SCENE_MIN_S


def test_an_unknown_id_is_repaired_by_position_only_when_certain(
    writer: GeminiScriptWriter, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply_next("script", answer([scene("c-1"), scene("chapter-two"), scene("c-3")]))

    script = writer.write(CHAPTERS, "Porto", "neutral").script

    assert [s.chapter_id for s in script.scenes] == ["c-1", "c-2", "c-3"]
    assert fake_gemini.request_count == 1


def test_a_missing_scene_gets_one_corrective_retry(
    writer: GeminiScriptWriter, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply_next("script", answer([scene("c-1"), scene("c-3")]))

    result = writer.write(CHAPTERS, "Porto", "neutral")

    assert [s.chapter_id for s in result.script.scenes] == ["c-1", "c-2", "c-3"]
    _, second = fake_gemini.requests
    assert "no scene for chapter(s) c-2" in second.prompt_text
    assert "c-1, c-2, c-3" in second.prompt_text
    assert result.usage.calls == 2


def test_two_unusable_answers_fail_with_invalid_model_output(
    writer: GeminiScriptWriter, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply_next("script", "not json at all", n=2)

    with pytest.raises(AgentError) as info:
        writer.write(CHAPTERS, "Porto", "neutral")

    assert info.value.code == "invalid_model_output" and not info.value.retryable
    assert fake_gemini.request_count == 2


def test_limits_are_checked_before_any_call(
    writer: GeminiScriptWriter, fake_gemini: FakeGemini
) -> None:
    many = tuple(ChapterInput(id=f"c-{i}", title="t", content="c") for i in range(MAX_SCENES + 1))
    with pytest.raises(AgentError) as info:
        writer.write(many, "Too long", "neutral")
    assert info.value.code == "too_many_scenes"
    with pytest.raises(AgentError) as empty:
        writer.write((), "Empty", "neutral")
    assert empty.value.code == "invalid_input"
    assert fake_gemini.request_count == 0


def test_the_offline_script_is_deterministic() -> None:
    writer = OfflineScriptWriter()

    first = writer.write(CHAPTERS, "Porto", "funny")
    again = writer.write(CHAPTERS, "Porto", "funny")

    assert first == again
    assert [s.chapter_id for s in first.script.scenes] == ["c-1", "c-2", "c-3"]
    assert first.script.scenes[0].narration_text == "We landed in Porto at dawn."
    assert first.script.music_mood == "upbeat"
    assert [s.transition for s in first.script.scenes] == ["fade", "slide", "zoom"]
