"""The streamed story builder: incremental parsing, per-chapter repairs, the corrective retry,
and timing, through the real google-genai SDK against the local fake Gemini."""

from __future__ import annotations

import json
import time
from itertools import pairwise
from typing import Any

import pytest

from agents import gemini
from agents.config import AgentSettings
from agents.errors import AgentError
from agents.story_builder import (
    ChapterOut,
    ChapterStreamParser,
    GeminiStoryBuilder,
    build_story_request,
    parse_chapters,
)
from agents.types import (
    ChapterDraft,
    NoteInput,
    StoryRestart,
    StoryResult,
    StorySettings,
    StoryStreamItem,
)
from tests.conftest import FAKE_GEMINI_KEY
from tests.fakes.gemini_server import FakeGemini, split_evenly

API_KEY = FAKE_GEMINI_KEY
T0 = 1_714_550_400_000  # 2024-05-01T08:00:00Z
HOUR_MS = 3_600_000

# Given out of order on purpose: the sorted order is n-1, n-2, n-3, n-4.
NOTES = (
    NoteInput(id="n-3", timestamp_ms=T0 + 2 * HOUR_MS, text_content="Pasteis de nata."),
    NoteInput(id="n-1", timestamp_ms=T0, title="Arrival", text_content="We landed in Lisbon."),
    NoteInput(id="n-4", timestamp_ms=T0 + 3 * HOUR_MS, text_content="Fado at night."),
    NoteInput(id="n-2", timestamp_ms=T0 + HOUR_MS, transcriptions=("The tram was packed.",)),
)
NOTE_IDS = ["n-1", "n-2", "n-3", "n-4"]


@pytest.fixture
def fake(fake_gemini: FakeGemini) -> FakeGemini:
    return fake_gemini


@pytest.fixture
def settings() -> AgentSettings:
    return AgentSettings(gemini_api_key=API_KEY)


def section(
    note_id: str | None, title: str = "A title", content: str = "Some content."
) -> dict[str, Any]:
    return {"title": title, "content": content, "illustrationPrompt": "A scene",
            "sourceNoteId": note_id}


def answer(*sections: dict[str, Any]) -> str:
    return json.dumps(list(sections))


def by_ids(*ids: str | None) -> str:
    return answer(*(section(note_id, title=f"T{i}") for i, note_id in enumerate(ids)))


def run(
    settings: AgentSettings, mode: str = "chapter", notes: tuple[NoteInput, ...] = NOTES
) -> list[StoryStreamItem]:
    builder = GeminiStoryBuilder(settings)
    return list(builder.stream(notes, "Lisbon", StorySettings(story_mode=mode)))


def chapters_of(items: list[StoryStreamItem]) -> list[ChapterDraft]:
    """The chapters yielded since the last restart."""
    restarts = [i for i, item in enumerate(items) if isinstance(item, StoryRestart)]
    start = restarts[-1] + 1 if restarts else 0
    return [item for item in items[start:] if isinstance(item, ChapterDraft)]


def result_of(items: list[StoryStreamItem]) -> StoryResult:
    assert isinstance(items[-1], StoryResult)
    assert sum(isinstance(item, StoryResult) for item in items) == 1
    return items[-1]


# --- the incremental parser -----------------------------------------------------------------

TRICKY = answer(
    section("n-1", title='Braces } { ] [ and "quotes"', content="A backslash \\ then \\\"."),
    section("n-2", title="Unicode é ✓ \u2028 and \\n", content='{"not": ["a", "section"]}'),
    {**section("n-3"), "extra": {"nested": [1, {"deep": "}]"}]}},
)


def feed_all(parser: ChapterStreamParser, pieces: list[str]) -> list[ChapterOut | None]:
    return [element for piece in pieces for element in parser.feed(piece)]


def test_parser_reads_a_whole_answer() -> None:
    parser = ChapterStreamParser()

    elements = parser.feed(TRICKY)

    assert parser.started and parser.complete
    assert [e.source_note_id for e in elements if e] == ["n-1", "n-2", "n-3"]
    first, second = elements[0], elements[1]
    assert first is not None and first.title == 'Braces } { ] [ and "quotes"'
    assert first.content == 'A backslash \\ then \\".'
    assert second is not None and second.content == '{"not": ["a", "section"]}'


@pytest.mark.parametrize("text", [TRICKY, by_ids("n-1", "n-2", "n-3", "n-4")])
def test_parser_gives_the_same_sections_whatever_the_chunk_boundaries(text: str) -> None:
    expected = ChapterStreamParser().feed(text)

    for cut in range(len(text) + 1):
        parser = ChapterStreamParser()
        assert feed_all(parser, [text[:cut], text[cut:]]) == expected, cut
        assert parser.complete
    for cut_a in range(0, len(text), 7):
        for cut_b in range(cut_a, len(text), 11):
            pieces = [text[:cut_a], text[cut_a:cut_b], text[cut_b:]]
            assert feed_all(ChapterStreamParser(), pieces) == expected, (cut_a, cut_b)
    assert feed_all(ChapterStreamParser(), list(text)) == expected  # one character at a time


def test_parser_yields_each_section_as_soon_as_it_closes() -> None:
    text = by_ids("n-1", "n-2")
    first_end = text.index("}") + 1
    parser = ChapterStreamParser()

    assert parser.feed(text[: first_end - 1]) == []
    (first,) = parser.feed(text[first_end - 1: first_end])
    assert first is not None and first.source_note_id == "n-1"
    assert not parser.complete
    (second,) = parser.feed(text[first_end:])
    assert second is not None and second.source_note_id == "n-2"
    assert parser.complete


@pytest.mark.parametrize(
    "wrap",
    [
        lambda body: f"```json\n{body}\n```",
        lambda body: f"```\n{body}\n```",
        lambda body: f'{{"chapters": {body}}}',
        lambda body: f'```json\n{{"chapters": {body}}}\n```',
    ],
    ids=["json-fence", "bare-fence", "wrapper", "fenced-wrapper"],
)
def test_parser_skips_a_fence_or_a_wrapper(wrap: Any) -> None:
    text = wrap(by_ids("n-1", "n-2", "n-3"))

    for pieces in ([text], list(text)):
        parser = ChapterStreamParser()
        elements = feed_all(parser, pieces)
        assert [e.source_note_id for e in elements if e] == ["n-1", "n-2", "n-3"]
        assert parser.complete


def test_parser_marks_elements_that_are_not_sections() -> None:
    text = '[{"title": "a", "content": "b"}, 42, "text", null, [1, 2], {"title": 5}, {"bad" 1}]'

    elements = ChapterStreamParser().feed(text)

    assert elements[0] == ChapterOut(title="a", content="b")
    assert elements[1:] == [None] * 6


def test_parser_reports_a_truncated_answer() -> None:
    text = by_ids("n-1", "n-2", "n-3")
    parser = ChapterStreamParser()

    elements = parser.feed(text[: text.rindex("}") - 5])

    assert [e.source_note_id for e in elements if e] == ["n-1", "n-2"]
    assert parser.started and not parser.complete


def test_parser_without_an_array_never_starts() -> None:
    parser = ChapterStreamParser()

    assert parser.feed("Once upon a time, there was a trip.") == []
    assert not parser.started and not parser.complete


# --- per-chapter checks and repairs (whole answers) -------------------------------------------


def test_an_empty_chapter_is_dropped_and_a_blank_title_derived() -> None:
    text = answer(
        section(None, title=" ", content=" "),
        section(None, title="", content="We walked along the river until the sun went down."),
        section("n-3", title="Pastries"),
    )

    chapters = parse_chapters(text, NOTES, "clean")

    assert [c.title for c in chapters] == ["We walked along the river until the sun...", "Pastries"]
    assert chapters[0].content == "We walked along the river until the sun went down."


@pytest.mark.parametrize("mode", ["clean", "creative"])
def test_merging_modes_drop_unknown_and_repeated_ids(mode: str) -> None:
    chapters = parse_chapters(by_ids("n-1", "n-9", "n-1"), NOTES, mode)

    assert [c.source_note_id for c in chapters] == ["n-1", None, None]


def test_only_one_id_is_repaired_per_answer() -> None:
    with pytest.raises(AgentError) as info:
        parse_chapters(by_ids("n-1", "n-8", "n-9", "n-4"), NOTES, "chapter")

    assert info.value.code == "invalid_model_output"
    assert 'section 3 names sourceNoteId "n-9"' in info.value.message


def test_a_surplus_chapter_is_not_repaired() -> None:
    with pytest.raises(AgentError) as info:
        parse_chapters(by_ids("n-1", "n-2", "n-3", "n-4", "n-4"), NOTES, "transcription")

    assert 'sections 4 and 5 both name sourceNoteId "n-4"' in info.value.message


# --- streaming through the SDK ---------------------------------------------------------------


def test_fake_streams_a_story_in_pieces_cut_mid_chapter(
    fake: FakeGemini, settings: AgentSettings
) -> None:
    request = build_story_request(NOTES, "Lisbon", StorySettings(), settings.story.model)

    chunks = list(gemini.generate_stream(
        settings, model=request.model, contents=request.context, config=request.config,
        timeout_ms=5_000,
    ))

    pieces = [gemini.response_text(chunk) for chunk in chunks]
    assert len(pieces) == fake.story_stream[1] == 16
    text = "".join(pieces)
    assert [c["sourceNoteId"] for c in json.loads(text)] == NOTE_IDS
    object_ends = {i + 1 for i, char in enumerate(text) if char == "}"}
    boundaries = {sum(map(len, pieces[:n])) for n in range(1, len(pieces))}
    assert boundaries - object_ends  # most pieces end in the middle of a chapter
    assert len({len(p) for p in pieces}) <= 2  # equal lengths, give or take a character


def test_a_scripted_reply_is_streamed_in_pieces_too(
    fake: FakeGemini, settings: AgentSettings
) -> None:
    scripted = by_ids("n-1", "n-2")
    fake.reply_next("story", scripted)
    fake.set_story_stream(0.0, chunks=5)
    request = build_story_request(NOTES, "Lisbon", StorySettings(), settings.story.model)

    chunks = list(gemini.generate_stream(
        settings, model=request.model, contents=request.context, config=request.config,
        timeout_ms=5_000,
    ))

    pieces = [gemini.response_text(chunk) for chunk in chunks]
    assert pieces == split_evenly(scripted, 5)
    assert chunks[-1].candidates and chunks[-1].candidates[0].finish_reason == "STOP"


def test_first_chapter_arrives_long_before_the_story_ends(
    fake: FakeGemini, settings: AgentSettings
) -> None:
    duration = 2.0
    fake.set_story_stream(duration)
    arrivals: list[tuple[float, StoryStreamItem]] = []
    started = time.monotonic()

    for item in GeminiStoryBuilder(settings).stream(NOTES, "Lisbon", StorySettings()):
        arrivals.append((time.monotonic() - started, item))

    times = [at for at, item in arrivals if isinstance(item, ChapterDraft)]
    items = [item for _, item in arrivals]
    assert len(times) == 4
    assert times[0] < 0.6 * duration
    # Spread over the stream, one about every quarter of it, not in a burst at the end.
    assert all(later - earlier > duration / 10 for earlier, later in pairwise(times))
    assert times[-1] - times[0] > duration / 2
    assert arrivals[-1][0] >= duration * 0.9
    result = items[-1]
    assert isinstance(result, StoryResult)
    assert list(result.chapters) == [i for i in items if isinstance(i, ChapterDraft)]
    assert [c.source_note_id for c in result.chapters] == NOTE_IDS
    assert len(fake.requests) == 1 and fake.requests[0].stream


def test_build_returns_the_streams_result(fake: FakeGemini, settings: AgentSettings) -> None:
    items = run(settings)

    built = GeminiStoryBuilder(settings).build(NOTES, "Lisbon", StorySettings())

    assert built == result_of(items)
    assert [c.source_note_id for c in built.chapters] == NOTE_IDS


def test_bad_input_fails_at_the_call_before_any_request(
    fake: FakeGemini, settings: AgentSettings
) -> None:
    with pytest.raises(AgentError) as info:
        GeminiStoryBuilder(settings).stream(NOTES, "Lisbon", StorySettings(story_mode="remix"))

    assert info.value.code == "invalid_input"
    assert fake.requests == []


def test_closing_the_stream_early_stops_reading_it(
    fake: FakeGemini, settings: AgentSettings
) -> None:
    fake.set_story_stream(3.0)
    stream = GeminiStoryBuilder(settings).stream(NOTES, "Lisbon", StorySettings())

    first = next(iter(stream))
    started = time.monotonic()
    stream.close()  # type: ignore[attr-defined]

    assert isinstance(first, ChapterDraft)
    assert time.monotonic() - started < 0.5  # the rest of the stream was not waited for


def test_a_stream_longer_than_the_story_timeout_fails(fake: FakeGemini) -> None:
    fake.set_story_stream(3.0)
    settings = AgentSettings(gemini_api_key=API_KEY, story_timeout_ms=800)
    started = time.monotonic()

    with pytest.raises(AgentError) as info:
        run(settings)

    # Each piece came well within the read timeout: only the whole-stream deadline can fire.
    assert (info.value.code, info.value.retryable) == ("upstream_timeout", True)
    assert time.monotonic() - started < 2.0


# --- malformed answers: repaired -------------------------------------------------------------


def test_truncated_answer_with_a_complete_set_is_kept(
    fake: FakeGemini, settings: AgentSettings
) -> None:
    whole = by_ids(*NOTE_IDS)
    fake.reply_next("story", whole[: whole.rindex("}") + 1])  # cut before the closing bracket

    items = run(settings)

    assert not any(isinstance(item, StoryRestart) for item in items)
    assert [c.source_note_id for c in result_of(items).chapters] == NOTE_IDS
    assert len(fake.requests) == 1


def test_truncated_answer_in_clean_mode_keeps_its_complete_chapters(
    fake: FakeGemini, settings: AgentSettings
) -> None:
    whole = by_ids("n-1", "n-3", "n-4")
    fake.reply_next("story", whole[: whole.rindex("}") - 3])  # cut inside the third chapter

    items = run(settings, mode="clean")

    assert [c.source_note_id for c in result_of(items).chapters] == ["n-1", "n-3"]
    assert chapters_of(items) == list(result_of(items).chapters)
    assert len(fake.requests) == 1


def test_unknown_id_in_clean_mode_becomes_none(fake: FakeGemini, settings: AgentSettings) -> None:
    fake.reply_next("story", by_ids("n-1", "made-up", "n-3"))

    items = run(settings, mode="clean")

    assert [c.source_note_id for c in chapters_of(items)] == ["n-1", None, "n-3"]
    assert result_of(items).chapters == tuple(chapters_of(items))
    assert len(fake.requests) == 1


def test_duplicated_id_is_reassigned_when_the_order_makes_it_certain(
    fake: FakeGemini, settings: AgentSettings
) -> None:
    fake.reply_next("story", by_ids("n-1", "n-2", "n-2", "n-4"))

    items = run(settings)

    # The third chapter is published already repaired: nothing has to be taken back.
    assert [c.source_note_id for c in chapters_of(items)] == NOTE_IDS
    assert [c.title for c in chapters_of(items)] == ["T0", "T1", "T2", "T3"]
    assert result_of(items).chapters == tuple(chapters_of(items))
    assert not any(isinstance(item, StoryRestart) for item in items)
    assert len(fake.requests) == 1


def test_empty_chapter_is_dropped_while_streaming(
    fake: FakeGemini, settings: AgentSettings
) -> None:
    fake.reply_next("story", answer(
        section("n-1"),
        section("n-2", title="", content=""),
        section(None, title="", content="x y"),
    ))

    items = run(settings, mode="creative")

    assert [(c.title, c.source_note_id) for c in chapters_of(items)] == [
        ("A title", "n-1"), ("x y", None),
    ]
    assert len(fake.requests) == 1


# --- malformed answers: retried once with a correction ----------------------------------------


@pytest.mark.parametrize(
    ("mode", "bad", "correction"),
    [
        ("chapter", by_ids("n-1", "n-2", "n-3")[:-30], [
            "the answer was cut off after 2 complete section(s)",
            "no section for note(s) n-3, n-4",
        ]),
        ("chapter", by_ids("n-1", "n-2", "n-4"), [
            "3 usable section(s) for 4 notes; no section for note(s) n-3",
        ]),
        ("transcription", by_ids("n-2", "n-1", "n-1"), [
            'sections 2 and 3 both name sourceNoteId "n-1"',
        ]),
        ("chapter", by_ids("n-2", "n-7"), [
            'section 2 names sourceNoteId "n-7", which is not one of the notes',
        ]),
        ("creative", by_ids("n-1"), ["1 usable section(s); creative mode needs at least 2"]),
        ("clean", answer(section("n-1", title="", content="")), [
            "section 1 is empty", "0 usable section(s); clean mode needs at least 1",
        ]),
        ("clean", "Sorry, here is a story: once upon a time...", [
            "the answer is not a JSON array of sections",
        ]),
    ],
    ids=["truncated", "missing", "duplicated", "unknown", "creative-count", "empty", "not-json"],
)
def test_unusable_answer_is_retried_with_a_correction(
    fake: FakeGemini, settings: AgentSettings, mode: str, bad: str, correction: list[str]
) -> None:
    fake.reply_next("story", bad)

    items = run(settings, mode=mode)

    restarts = [item for item in items if isinstance(item, StoryRestart)]
    assert len(restarts) == 1 and restarts[0].reason
    first, second = fake.requests_of("story")
    assert "previous answer" not in first.prompt_text
    assert "Your previous answer could not be used" in second.prompt_text
    for problem in correction:
        assert problem in second.prompt_text
    assert "n-1, n-2, n-3, n-4" in second.prompt_text  # what the mode needs, with the ids
    # The second (good) answer is the story; its usage adds to the first one's.
    result = result_of(items)
    assert len(result.chapters) == 4
    assert result.chapters == tuple(chapters_of(items))
    assert first.usage is not None and second.usage is not None
    assert result.usage.input_tokens == (
        first.usage["promptTokenCount"] + second.usage["promptTokenCount"]
    )
    assert result.usage.output_tokens == (
        first.usage["candidatesTokenCount"] + second.usage["candidatesTokenCount"]
    )
    assert result.usage.calls == 2


def test_a_doomed_answer_is_abandoned_before_it_ends(
    fake: FakeGemini, settings: AgentSettings
) -> None:
    duration = 1.5
    fake.set_story_stream(duration)
    fake.reply_next("story", by_ids("n-2", "n-9", "n-3", "n-4", "n-1"))
    arrivals: list[tuple[float, StoryStreamItem]] = []
    started = time.monotonic()

    for item in GeminiStoryBuilder(settings).stream(NOTES, "Lisbon", StorySettings()):
        arrivals.append((time.monotonic() - started, item))

    restart_at = next(at for at, item in arrivals if isinstance(item, StoryRestart))
    # Section 2 can never be right (section 1 is out of order): no need to read the other 3.
    assert restart_at < duration * 0.7
    published_before = [i for at, i in arrivals if at < restart_at and isinstance(i, ChapterDraft)]
    assert [c.source_note_id for c in published_before] == ["n-2"]
    assert [c.source_note_id for c in result_of([i for _, i in arrivals]).chapters] == NOTE_IDS


def test_second_unusable_answer_fails_with_invalid_model_output(
    fake: FakeGemini, settings: AgentSettings
) -> None:
    fake.reply_next("story", by_ids("n-1", "n-2"), n=2)
    items: list[object] = []

    with pytest.raises(AgentError) as info:
        for item in GeminiStoryBuilder(settings).stream(NOTES, "Lisbon", StorySettings()):
            items.append(item)

    error = info.value
    assert (error.code, error.retryable) == ("invalid_model_output", False)
    assert error.message == (
        "The AI model returned an unusable story twice; chapter mode needs exactly one chapter "
        "per moment."
    )
    assert error.detail and "no section for note(s) n-3, n-4" in error.detail
    assert [type(item).__name__ for item in items] == [
        "ChapterDraft", "ChapterDraft", "StoryRestart", "ChapterDraft", "ChapterDraft",
    ]
    assert len(fake.requests) == 2


# --- safety ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("on", "reason", "text"),
    [
        ("prompt", "PROHIBITED_CONTENT",
         "The request was blocked by the AI provider's safety filters "
         "(reason: PROHIBITED_CONTENT)."),
        ("candidate", "SAFETY",
         "The answer was blocked by the AI provider's safety filters (reason: SAFETY)."),
    ],
)
def test_blocked_story_fails_at_once_with_the_reason(
    fake: FakeGemini, settings: AgentSettings, on: str, reason: str, text: str
) -> None:
    fake.block_next("story", reason=reason, on=on)  # type: ignore[arg-type]

    with pytest.raises(AgentError) as info:
        run(settings)

    assert (info.value.code, info.value.retryable, info.value.message) == ("blocked", False, text)
    assert len(fake.requests) == 1  # no corrective retry for a safety block
