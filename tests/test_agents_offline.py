"""The offline provider, provider selection, and both implementations matching the interfaces."""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import time
import typing
from collections.abc import Callable

import pytest
from PIL import Image

from agents.config import AgentSettings
from agents.errors import AgentError
from agents.illustration import GeminiIllustrator
from agents.offline import OfflineIllustrator, OfflineStoryBuilder, OfflineTranscriber
from agents.provider import Illustrator, StoryBuilder, Transcriber, build_provider
from agents.story_builder import GeminiStoryBuilder, parse_chapters
from agents.transcription import GeminiTranscriber
from agents.types import (
    IMAGE_STYLES,
    NARRATIVE_TONES,
    ChapterDraft,
    NoteInput,
    StoryResult,
    StorySettings,
)

DAY_MS = 86_400_000
T0 = 1_714_550_400_000  # 2024-05-01T08:00:00Z


def make_notes(count: int) -> list[NoteInput]:
    # Given newest first on purpose: the builder must sort them.
    return [
        NoteInput(
            id=f"note-{i}",
            timestamp_ms=T0 + i * DAY_MS // 2,
            title=f"Moment {i}" if i % 2 else None,
            text_content=f"Text of moment {i}." if i % 3 else None,
            transcriptions=(f"Spoken words {i}",) if i % 3 == 0 else (),
            image_count=i % 2,
        )
        for i in reversed(range(count))
    ]


# --- transcriber ----------------------------------------------------------------------------


def test_transcription_placeholder_describes_the_audio() -> None:
    audio = bytes(range(256)) * 48  # 12 KiB

    result = OfflineTranscriber().transcribe(audio, "audio/webm;codecs=opus")

    digest = hashlib.sha256(audio).hexdigest()[:8]
    assert result.text == f"[offline transcription] audio/webm, 12.0 KB, sha256 {digest}"
    assert (result.usage.model, result.usage.input_tokens, result.usage.output_tokens) == (
        "offline", 0, 0,
    )
    assert OfflineTranscriber().transcribe(audio, "audio/webm") == result


@pytest.mark.parametrize(("audio", "mime"), [(b"", "audio/webm"), (b"abc", "text/plain")])
def test_transcription_rejects_what_gemini_would_reject(audio: bytes, mime: str) -> None:
    with pytest.raises(AgentError) as info:
        OfflineTranscriber().transcribe(audio, mime)

    assert (info.value.code, info.value.retryable) == ("invalid_input", False)


# --- story builder --------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("mode", ["chapter", "transcription"])
def test_one_chapter_per_note_in_note_order(mode: str, count: int) -> None:
    notes = make_notes(count)

    result = OfflineStoryBuilder().build(notes, "Lisbon", StorySettings(story_mode=mode))

    assert [c.source_note_id for c in result.chapters] == [f"note-{i}" for i in range(count)]
    assert all(c.title and c.content and c.illustration_prompt for c in result.chapters)


@pytest.mark.parametrize(
    ("mode", "count", "expected"),
    [
        ("clean", 1, 1), ("clean", 2, 1), ("clean", 5, 3), ("clean", 8, 4),
        ("creative", 1, 2), ("creative", 2, 2), ("creative", 5, 3), ("creative", 8, 4),
    ],
)
def test_merging_modes_write_about_half_as_many_chapters(
    mode: str, count: int, expected: int
) -> None:
    settings = StorySettings(story_mode=mode)

    result = OfflineStoryBuilder().build(make_notes(count), "Lisbon", settings)

    assert len(result.chapters) == expected
    known = {f"note-{i}" for i in range(count)}
    assert all(c.source_note_id in known or c.source_note_id is None for c in result.chapters)


def test_transcription_mode_keeps_the_notes_own_words() -> None:
    notes = [
        NoteInput(id="a", timestamp_ms=T0, text_content="Landed in Lisbon."),
        NoteInput(id="b", timestamp_ms=T0 + 1, transcriptions=("The tram was packed.",)),
    ]

    result = OfflineStoryBuilder().build(notes, "Trip", StorySettings(story_mode="transcription"))

    assert [c.content for c in result.chapters] == ["Landed in Lisbon.", "The tram was packed."]


def test_merged_chapters_carry_every_note_text() -> None:
    notes = make_notes(6)

    result = OfflineStoryBuilder().build(notes, "Trip", StorySettings(story_mode="clean"))

    story = "\n".join(c.content for c in result.chapters)
    for note in notes:
        for words in (note.text_content, *note.transcriptions):
            if words:
                assert words in story


@pytest.mark.parametrize("tone", NARRATIVE_TONES)
def test_story_is_deterministic_for_every_tone(tone: str) -> None:
    settings = StorySettings(narrative_tone=tone, story_mode="chapter")

    first = OfflineStoryBuilder().build(make_notes(4), "Lisbon", settings)
    second = OfflineStoryBuilder().build(list(reversed(make_notes(4))), "Lisbon", settings)

    assert first == second
    assert first.usage.model == "offline"


def test_offline_story_passes_the_gemini_answer_validation() -> None:
    notes = make_notes(5)
    result = OfflineStoryBuilder().build(notes, "Lisbon", StorySettings(story_mode="chapter"))
    as_json = json.dumps([
        {"title": c.title, "content": c.content, "illustrationPrompt": c.illustration_prompt,
         "sourceNoteId": c.source_note_id}
        for c in result.chapters
    ])

    assert parse_chapters(as_json, notes, "chapter") == result.chapters


@pytest.mark.parametrize("mode", ["chapter", "clean", "creative"])
def test_stream_yields_the_built_chapters_one_by_one_then_the_result(mode: str) -> None:
    notes, settings = make_notes(5), StorySettings(story_mode=mode)
    built = OfflineStoryBuilder().build(notes, "Lisbon", settings)

    items = list(OfflineStoryBuilder().stream(notes, "Lisbon", settings))

    assert items == [*built.chapters, built]
    assert all(isinstance(item, ChapterDraft) for item in items[:-1])
    assert isinstance(items[-1], StoryResult)


def test_chapter_delay_paces_the_stream_chapter_by_chapter() -> None:
    """OFFLINE_CHAPTER_DELAY_MS: each chapter comes that long after the one before, as a
    model's would, so a client can show chapters before the story is finished."""
    settings = AgentSettings.from_env({"OFFLINE_CHAPTER_DELAY_MS": "150"})
    builder = build_provider(settings).story_builder
    notes = make_notes(3)

    items, times = [], []
    start = time.monotonic()
    for item in builder.stream(notes, "Lisbon", StorySettings()):
        items.append(item)
        times.append(time.monotonic() - start)

    built = OfflineStoryBuilder().build(notes, "Lisbon", StorySettings())
    assert items == [*built.chapters, built]
    chapter_times = times[:-1]
    gaps = [later - earlier for earlier, later in zip([0.0, *chapter_times], chapter_times,
                                                       strict=False)]
    assert len(gaps) == 3 and all(gap >= 0.14 for gap in gaps), gaps


@pytest.mark.parametrize("raw", ["-1", "soon"])
def test_chapter_delay_must_be_whole_non_negative_milliseconds(raw: str) -> None:
    with pytest.raises(ValueError, match="OFFLINE_CHAPTER_DELAY_MS"):
        AgentSettings.from_env({"OFFLINE_CHAPTER_DELAY_MS": raw})


def test_story_rejects_an_empty_note_list() -> None:
    with pytest.raises(AgentError) as info:
        OfflineStoryBuilder().build([], "Lisbon", StorySettings())

    assert info.value.code == "invalid_input"


# --- illustrator ----------------------------------------------------------------------------


@pytest.mark.parametrize("style", IMAGE_STYLES)
def test_illustration_is_a_decodable_4_3_png(style: str) -> None:
    result = OfflineIllustrator().illustrate("A yellow tram on a hill", style)

    with Image.open(io.BytesIO(result.data)) as image:
        assert image.format == "PNG"
        assert image.size == (result.width, result.height) == (800, 600)
    assert result.mime_type == "image/png" and result.usage.model == "offline"


def test_illustration_is_deterministic_and_depends_on_prompt_and_style() -> None:
    illustrator = OfflineIllustrator()

    first = illustrator.illustrate("A yellow tram", "pastel")

    assert illustrator.illustrate("A yellow tram", "pastel").data == first.data
    assert illustrator.illustrate("A red tram", "pastel").data != first.data
    assert illustrator.illustrate("A yellow tram", "realistic").data != first.data


@pytest.mark.parametrize(("prompt", "style"), [("", "pastel"), ("A tram", "cubist")])
def test_illustration_rejects_bad_input(prompt: str, style: str) -> None:
    with pytest.raises(AgentError) as info:
        OfflineIllustrator().illustrate(prompt, style)

    assert info.value.code == "invalid_input"


# --- provider and interfaces ----------------------------------------------------------------


def test_no_key_means_offline_provider() -> None:
    provider = build_provider(AgentSettings.from_env({"GEMINI_API_KEY": ""}))

    assert provider.mode == "offline"
    assert isinstance(provider.transcriber, OfflineTranscriber)
    assert isinstance(provider.story_builder, OfflineStoryBuilder)
    assert isinstance(provider.illustrator, OfflineIllustrator)


def test_a_key_means_gemini_provider() -> None:
    provider = build_provider(AgentSettings.from_env(
        {"GEMINI_API_KEY": "k", "GEMINI_MODEL_FLASH": "flash-x"}))

    assert provider.mode == "gemini"
    assert isinstance(provider.transcriber, GeminiTranscriber)
    assert isinstance(provider.story_builder, GeminiStoryBuilder)
    assert isinstance(provider.illustrator, GeminiIllustrator)
    assert provider.transcriber.model == provider.story_builder.model == "flash-x"
    assert provider.illustrator.model == "gemini-nano-banana-2.1"


INTERFACES: list[tuple[type, str, list[object]]] = [
    (Transcriber, "transcribe", [GeminiTranscriber(AgentSettings()), OfflineTranscriber()]),
    (StoryBuilder, "build", [GeminiStoryBuilder(AgentSettings()), OfflineStoryBuilder()]),
    (StoryBuilder, "stream", [GeminiStoryBuilder(AgentSettings()), OfflineStoryBuilder()]),
    (Illustrator, "illustrate", [GeminiIllustrator(AgentSettings()), OfflineIllustrator()]),
]


def _hints(function: Callable[..., object]) -> dict[str, object]:
    return typing.get_type_hints(function)


@pytest.mark.parametrize(("protocol", "method", "implementations"), INTERFACES)
def test_both_implementations_satisfy_the_interface(
    protocol: type, method: str, implementations: list[object]
) -> None:
    expected = inspect.signature(getattr(protocol, method))
    for implementation in implementations:
        assert isinstance(implementation, protocol)
        actual = inspect.signature(getattr(type(implementation), method))
        assert list(actual.parameters) == list(expected.parameters)
        assert _hints(getattr(type(implementation), method)) == _hints(getattr(protocol, method))
        assert isinstance(implementation.model, str)  # type: ignore[attr-defined]
        assert implementation.prompt_version  # type: ignore[attr-defined]


def test_prompt_versions_differ_between_providers() -> None:
    # Cache keys include model and prompt version: offline answers must never be served as
    # Gemini answers, or the other way round.
    gemini = build_provider(AgentSettings(gemini_api_key="k"))
    offline = build_provider(AgentSettings())

    pairs: list[tuple[Transcriber | StoryBuilder | Illustrator, ...]] = [
        (gemini.transcriber, offline.transcriber),
        (gemini.story_builder, offline.story_builder),
        (gemini.illustrator, offline.illustrator),
    ]
    for g, o in pairs:
        assert (g.model, g.prompt_version) != (o.model, o.prompt_version)
