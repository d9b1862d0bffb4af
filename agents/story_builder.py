"""Story builder agent: a space's notes in, chapters out (Gemini, JSON schema output).

The answer is streamed: ``ChapterStreamParser`` cuts each chapter object out of the JSON text as
soon as it closes, ``StoryAssembler`` checks and repairs it on the spot and judges the whole set
at the end, and ``GeminiStoryBuilder.stream`` retries an unusable answer once with a corrective
instruction (``StoryRestart``) before failing with ``invalid_model_output``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import groupby

import pydantic
from google.genai import types

from agents import gemini
from agents.config import AgentSettings
from agents.errors import AgentError
from agents.models import availability
from agents.prompts import (
    MODE_INSTRUCTIONS,
    STORY_PROMPT_VERSION,
    TONE_INSTRUCTIONS,
    story_correction,
    story_system_instruction,
)
from agents.types import (
    ChapterDraft,
    NoteInput,
    StoryRestart,
    StoryResult,
    StorySettings,
    StoryStreamItem,
    Usage,
)

log = logging.getLogger(__name__)

# Modes whose answer must be exactly one section per note, each naming its note.
ONE_SECTION_PER_NOTE_MODES: frozenset[str] = frozenset({"transcription", "chapter"})

# Note-id convention, shared with tests/fakes/gemini_server.py: each note of the context has a
# line starting at column 0 with this prefix followed by the id. User-written text is always
# indented, so no other line of the context can start with it.
NOTE_ID_PREFIX = "id: "
_INDENT = "  "
# Not strftime's %A: that follows the process locale, and the context must not.
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# A title made up for a section the model left untitled: its content's first words.
_DERIVED_TITLE_WORDS = 8
# Model-written values quoted back in a correction are cut to this length.
_QUOTE_LIMIT = 60
_DETAIL_LIMIT = 300
# What each mode needs, in the words of the client-facing error.
_MODE_NEEDS: dict[str, str] = {
    "transcription": "exactly one chapter per moment",
    "chapter": "exactly one chapter per moment",
    "clean": "at least one chapter",
    "creative": "at least two chapters",
}


class ChapterOut(pydantic.BaseModel):
    """One section as the model returns it (camelCase, like the frontend's Chapter).

    Blank fields are allowed here: ``StoryAssembler`` decides what a blank title or content means.
    """

    model_config = pydantic.ConfigDict(
        populate_by_name=True, extra="ignore", str_strip_whitespace=True
    )

    title: str | None = None
    content: str | None = None
    illustration_prompt: str | None = pydantic.Field(default=None, alias="illustrationPrompt")
    source_note_id: str | None = pydantic.Field(default=None, alias="sourceNoteId")


@dataclass(frozen=True)
class StoryRequest:
    """Everything one story call sends: what the model reads and how it must answer."""

    model: str
    context: str
    config: types.GenerateContentConfig
    notes: tuple[NoteInput, ...]
    mode: str
    # Sent only to model families that take one (2.x); 3.x get the creativity in the prompt.
    temperature: float | None = None


def temperature_for(creativity: float) -> float:
    """The frontend's rule for models that take a temperature: ``min(1.5, creativity * 0.75)``,
    never below 0."""
    return max(0.0, min(1.5, creativity * 0.75))


def sort_notes(notes: Sequence[NoteInput]) -> list[NoteInput]:
    """Chronological order; the id breaks ties so the order is stable across calls."""
    return sorted(notes, key=lambda n: (n.timestamp_ms, n.id))


def _utc(timestamp_ms: int) -> datetime:
    return datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)


def _field(name: str, value: str) -> list[str]:
    lines = value.strip().replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return [f"{_INDENT}{name}: {lines[0]}", *(f"{_INDENT}{_INDENT}{line}" for line in lines[1:])]


def _note_block(index: int, note: NoteInput) -> list[str]:
    lines = [
        f"Note {index}",
        f"{NOTE_ID_PREFIX}{note.id}",
        f"{_INDENT}time: {_utc(note.timestamp_ms):%Y-%m-%d %H:%M} UTC",
    ]
    if note.title and note.title.strip():
        lines += _field("title", note.title)
    if note.text_content and note.text_content.strip():
        lines += _field("text", note.text_content)
    spoken = [t for t in note.transcriptions if t and t.strip()]
    for number, transcription in enumerate(spoken, start=1):
        lines += _field(f"voice note {number}", transcription)
    if not (note.title or note.text_content or spoken):
        lines.append(f"{_INDENT}(no words, only media)")
    if note.image_count:
        lines.append(f"{_INDENT}photos: {note.image_count}")
    return lines


def build_story_context(notes: Sequence[NoteInput], space_title: str) -> str:
    """The text the model reads: the space, then its notes by UTC day, oldest first.

    Each note shows ``id: <note id>`` at the start of a line (see ``NOTE_ID_PREFIX``).
    """
    ordered = sort_notes(notes)
    title = " ".join(space_title.split()) or "(untitled)"
    lines = [f"Space: {title}", f"Notes: {len(ordered)}"]
    if ordered:
        first, last = _utc(ordered[0].timestamp_ms), _utc(ordered[-1].timestamp_ms)
        lines.append(f"Period: {first:%Y-%m-%d} to {last:%Y-%m-%d} (UTC)")
    index = 0
    days: list[tuple[date, list[NoteInput]]] = [
        (day, list(group))
        for day, group in groupby(ordered, key=lambda n: _utc(n.timestamp_ms).date())
    ]
    for day_number, (day, day_notes) in enumerate(days, start=1):
        lines += ["", f"Day {day_number} - {_WEEKDAYS[day.weekday()]} {day:%Y-%m-%d}"]
        for note in day_notes:
            index += 1
            lines += ["", *_note_block(index, note)]
    return "\n".join(lines) + "\n"


def story_response_schema(mode: str, note_count: int) -> types.Schema:
    """The JSON schema of the answer: an array of sections."""
    one_per_note = mode in ONE_SECTION_PER_NOTE_MODES
    required = ["title", "content", "illustrationPrompt"]
    if one_per_note:
        required.append("sourceNoteId")
    string = types.Schema(type=types.Type.STRING)
    return types.Schema(
        type=types.Type.ARRAY,
        min_items=note_count if one_per_note else 1,
        max_items=note_count if one_per_note else None,
        items=types.Schema(
            type=types.Type.OBJECT,
            properties={
                "title": string,
                "content": string,
                "illustrationPrompt": string,
                "sourceNoteId": string,
            },
            required=required,
            property_ordering=["title", "content", "illustrationPrompt", "sourceNoteId"],
        ),
    )


def check_story_input(notes: Sequence[NoteInput], settings: StorySettings) -> None:
    """Reject what no model call can fix: no notes, duplicate ids, unknown tone or mode."""
    if not notes:
        raise AgentError("invalid_input", "A story needs at least one note.", retryable=False)
    if any(not n.id or any(ch.isspace() for ch in n.id) for n in notes):
        raise AgentError(
            "invalid_input", "Note ids must be non-empty, without spaces.", retryable=False
        )
    if len({n.id for n in notes}) != len(notes):
        raise AgentError("invalid_input", "Note ids must be unique.", retryable=False)
    if settings.narrative_tone not in TONE_INSTRUCTIONS:
        raise AgentError(
            "invalid_input", f"Unknown narrative tone {settings.narrative_tone!r}.",
            retryable=False,
        )
    if settings.story_mode not in MODE_INSTRUCTIONS:
        raise AgentError(
            "invalid_input", f"Unknown story mode {settings.story_mode!r}.", retryable=False
        )


def build_story_request(
    notes: Sequence[NoteInput], space_title: str, settings: StorySettings, model: str
) -> StoryRequest:
    """Prepare one story call: the context, the JSON schema, the creativity (in the prompt,
    and as a temperature for the model families that take one)."""
    check_story_input(notes, settings)
    ordered = tuple(sort_notes(notes))
    config = types.GenerateContentConfig(
        system_instruction=story_system_instruction(
            settings.narrative_tone, settings.story_mode, settings.creativity),
        response_mime_type="application/json",
        response_schema=story_response_schema(settings.story_mode, len(ordered)),
    )
    return StoryRequest(
        model=model,
        context=build_story_context(ordered, space_title),
        config=config,
        notes=ordered,
        mode=settings.story_mode,
        temperature=temperature_for(settings.creativity),
    )


def _invalid(message: str) -> AgentError:
    return AgentError("invalid_model_output", message, retryable=False)


def _quote(value: str) -> str:
    # JSON quoting keeps a model-written value on one line of the correction.
    return json.dumps(value if len(value) <= _QUOTE_LIMIT else value[:_QUOTE_LIMIT] + "...")


def title_from_content(content: str) -> str:
    """A title for an untitled section: the first words of its content."""
    words = content.split()
    title = " ".join(words[:_DERIVED_TITLE_WORDS]).rstrip(".,;:!?-")
    return title + ("..." if len(words) > _DERIVED_TITLE_WORDS else "")


# --- incremental parsing -------------------------------------------------------------------

_BEFORE, _INSIDE, _AFTER = "before", "inside", "after"
_WHITESPACE = frozenset(" \t\r\n")


class ChapterStreamParser:
    """Cuts the elements of a streamed JSON array of sections out of its text as it arrives.

    Only strings, escapes and nesting depth are tracked; an element is parsed on its own once
    it closes. The sections are the elements of the first array opened outside a string, so a
    leading ```json fence or a ``{"chapters": [...]}`` wrapper is skipped, and whatever follows
    the array's closing bracket is ignored.
    """

    def __init__(self) -> None:
        self._stage = _BEFORE
        self._depth = 0  # nesting inside the current element
        self._in_string = False
        self._escaped = False
        self._element: list[str] = []  # text of the element being read, from earlier chunks
        self._reading = False  # inside an element (object, array or scalar)

    @property
    def started(self) -> bool:
        """The array of sections has opened."""
        return self._stage != _BEFORE

    @property
    def complete(self) -> bool:
        """The array of sections has closed."""
        return self._stage == _AFTER

    def feed(self, text: str) -> list[ChapterOut | None]:
        """The elements that closed in ``text``; None for one that is not a section object."""
        closed: list[ChapterOut | None] = []
        start = 0 if self._reading else None
        for index, char in enumerate(text):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
                continue
            if self._stage == _BEFORE:
                if char == '"':
                    self._in_string = True
                elif char == "[":
                    self._stage = _INSIDE
                continue
            if self._stage == _AFTER:
                break
            if self._depth == 0:
                if char in _WHITESPACE:
                    continue
                if char in ",]":
                    if self._reading:  # a bare value: a string, a number, null...
                        closed.append(None)
                        self._end_element()
                        start = None
                    if char == "]":
                        self._stage = _AFTER
                    continue
                if not self._reading:
                    self._reading, start = True, index
                if char in "{[":
                    self._depth = 1
                elif char == '"':
                    self._in_string = True
                continue
            if char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 0:
                    self._element.append(text[start:index + 1])
                    closed.append(_section("".join(self._element)))
                    self._end_element()
                    start = None
        if self._reading and start is not None:
            self._element.append(text[start:])
        return closed

    def _end_element(self) -> None:
        self._element = []
        self._reading = False


def _section(raw: str) -> ChapterOut | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    try:
        return ChapterOut.model_validate(data)
    except pydantic.ValidationError:
        return None


# --- checks and repairs --------------------------------------------------------------------


class InvalidStory(Exception):
    """The model's answer cannot be used; ``problems`` say why, precisely, for a correction."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)


class StoryAssembler:
    """Checks each section as it arrives, repairs what is safe, and judges the whole set.

    Per section: one without content is dropped; one without a title gets one from its
    content. In ``clean``/``creative`` modes an unknown or repeated sourceNoteId becomes None.
    In one-section-per-note modes a missing, unknown or repeated sourceNoteId is repaired only
    when the position makes the note certain - every earlier section named the note at its own
    position in the sorted notes, so this one is the next note - and only once per answer;
    otherwise the answer is ``doomed`` and reading it further is pointless.
    """

    def __init__(self, notes: Sequence[NoteInput], mode: str) -> None:
        self.mode = mode
        self.note_ids = [note.id for note in sort_notes(notes)]
        self._known = frozenset(self.note_ids)
        self._one_per_note = mode in ONE_SECTION_PER_NOTE_MODES
        self._chapters: list[ChapterDraft] = []
        self._used: dict[str, int] = {}  # note id -> number of the section naming it
        self._problems: list[str] = []
        self._sections = 0
        self._in_note_order = True
        self._id_repaired = False
        self.repairs: list[str] = []  # what was repaired, for the logs
        self.doomed = False

    @property
    def chapters(self) -> tuple[ChapterDraft, ...]:
        return tuple(self._chapters)

    def add(self, section: ChapterOut | None) -> ChapterDraft | None:
        """The chapter to publish for this section, or None when it is dropped."""
        position = self._sections
        number = position + 1  # the section's number in the model's answer, for messages
        self._sections += 1
        if self.doomed:
            return None
        if section is None:
            self._in_note_order = False
            self._problems.append(f"section {number} is not a JSON object with the section fields")
            return None
        title, content = section.title or "", section.content or ""
        if not content:
            self._in_note_order = False
            self._problems.append(
                f"section {number} has no content" if title else f"section {number} is empty"
            )
            return None
        note_id = self._note_id(section.source_note_id or None, position)
        if self.doomed:
            return None
        if not title:
            title = title_from_content(content)
            self.repairs.append(f"section {number}: title derived from its content")
        chapter = ChapterDraft(
            title=title,
            content=content,
            illustration_prompt=section.illustration_prompt or None,
            source_note_id=note_id,
        )
        self._chapters.append(chapter)
        if note_id is not None:
            self._used[note_id] = number
        return chapter

    def _note_id(self, note_id: str | None, position: int) -> str | None:
        number = position + 1
        problem: str | None = None
        if note_id is None:
            if not self._one_per_note:
                return None
            problem = f"section {number} has no sourceNoteId"
        elif note_id not in self._known:
            problem = (
                f"section {number} names sourceNoteId {_quote(note_id)}, "
                "which is not one of the notes"
            )
        elif note_id in self._used:
            problem = (
                f"sections {self._used[note_id]} and {number} both name sourceNoteId "
                f"{_quote(note_id)}"
            )
        if problem is None:
            if position >= len(self.note_ids) or self.note_ids[position] != note_id:
                self._in_note_order = False
            return note_id
        if not self._one_per_note:
            self.repairs.append(f"{problem}: sourceNoteId dropped")
            return None
        if self._in_note_order and not self._id_repaired and position < len(self.note_ids):
            repaired = self.note_ids[position]
            self.repairs.append(f"{problem}: sourceNoteId set to {_quote(repaired)} by position")
            self._id_repaired = True
            return repaired
        self._problems.append(problem)
        self.doomed = True
        return None

    def finish(self, *, started: bool, complete: bool) -> tuple[ChapterDraft, ...]:
        """The answer's chapters if the set is valid for the mode; ``InvalidStory`` otherwise.

        A truncated answer, or one with sections that could not be read, is kept when the
        sections read so far already make a valid set.
        """
        problems = list(self._problems)
        if self.doomed:
            raise InvalidStory(problems)
        if not started:
            problems.insert(0, "the answer is not a JSON array of sections")
        elif not complete:
            problems.append(
                f"the answer was cut off after {self._sections} complete section(s)"
            )
        count = len(self._chapters)
        if self._one_per_note:
            missing = [note_id for note_id in self.note_ids if note_id not in self._used]
            if not missing:
                return self.chapters
            problems.append(
                f"{count} usable section(s) for {len(self.note_ids)} notes; no section for "
                f"note(s) {', '.join(missing)}"
            )
        else:
            needed = 2 if self.mode == "creative" else 1
            if count >= needed:
                return self.chapters
            problems.append(
                f"{count} usable section(s); {self.mode} mode needs at least {needed}"
            )
        raise InvalidStory(problems)


def parse_chapters(
    text: str, notes: Sequence[NoteInput], mode: str
) -> tuple[ChapterDraft, ...]:
    """Check and repair a whole answer at once, as if it had been streamed."""
    parser = ChapterStreamParser()
    assembler = StoryAssembler(notes, mode)
    for section in parser.feed(text):
        assembler.add(section)
    try:
        return assembler.finish(started=parser.started, complete=parser.complete)
    except InvalidStory as exc:
        raise _invalid(f"The story is not valid: {exc}.") from exc


def validate_chapters(
    chapters: Sequence[ChapterDraft], notes: Sequence[NoteInput], mode: str
) -> tuple[ChapterDraft, ...]:
    """Enforce the mode's rules; one-per-note modes come back in the notes' order."""
    if not chapters:
        raise _invalid("The story has no chapters.")
    order = {note.id: position for position, note in enumerate(sort_notes(notes))}
    if mode not in ONE_SECTION_PER_NOTE_MODES:
        return tuple(
            c if c.source_note_id in order or c.source_note_id is None
            else ChapterDraft(c.title, c.content, c.illustration_prompt, None)
            for c in chapters
        )
    seen: set[str] = set()
    for chapter in chapters:
        note_id = chapter.source_note_id
        if note_id is None:
            raise _invalid(f"In {mode} mode every chapter needs its sourceNoteId.")
        if note_id not in order:
            raise _invalid(f"A chapter names an unknown sourceNoteId in {mode} mode.")
        if note_id in seen:
            raise _invalid(f"Two chapters name the same sourceNoteId in {mode} mode.")
        seen.add(note_id)
    if len(seen) != len(order):
        raise _invalid(
            f"{mode.capitalize()} mode needs one chapter per note: got {len(seen)} "
            f"for {len(order)} notes."
        )
    return tuple(sorted(chapters, key=lambda c: order[str(c.source_note_id)]))


def final_story(items: Iterable[StoryStreamItem]) -> StoryResult:
    """Consume a story stream and return its ``StoryResult``."""
    result: StoryResult | None = None
    for item in items:
        if isinstance(item, StoryResult):
            result = item
    if result is None:
        raise _invalid("The story ended without a result.")
    return result


def _total(first: Usage, second: Usage) -> Usage:
    return Usage(
        model=first.model,
        input_tokens=first.input_tokens + second.input_tokens,
        output_tokens=first.output_tokens + second.output_tokens,
        calls=first.calls + second.calls,
    )


@dataclass(frozen=True)
class _Attempt:
    chapters: tuple[ChapterDraft, ...]
    usage: Usage
    problems: tuple[str, ...] = ()


class GeminiStoryBuilder:
    """Writes a story from notes with the story route's model, streamed chapter by chapter."""

    prompt_version = STORY_PROMPT_VERSION

    def __init__(self, settings: AgentSettings) -> None:
        self._settings = settings

    @property
    def model(self) -> str:
        """The model the next call goes to: the route's first one not known to be retired."""
        return availability.active(self._settings.story, self._settings.model_recheck_s)

    def build(
        self, notes: Sequence[NoteInput], space_title: str, settings: StorySettings
    ) -> StoryResult:
        """Write the story's chapters; raises ``AgentError`` on any failure."""
        return final_story(self.stream(notes, space_title, settings))

    def stream(
        self, notes: Sequence[NoteInput], space_title: str, settings: StorySettings
    ) -> Iterator[StoryStreamItem]:
        """Yield each chapter as soon as the model has written it, then the ``StoryResult``.

        Bad input raises here; the call to Gemini starts with the iteration. An unusable answer
        is generated again once, with a correction, after a ``StoryRestart``; a second one
        fails with ``invalid_model_output``.
        """
        return self._stream(build_story_request(notes, space_title, settings, self.model))

    def _stream(self, request: StoryRequest) -> Iterator[StoryStreamItem]:
        first = yield from self._attempt(request, correction=None)
        if not first.problems:
            yield StoryResult(chapters=first.chapters, usage=first.usage)
            return
        more = " and more" if len(first.problems) > 1 else ""
        yield StoryRestart(
            reason=f"The model's first answer was unusable ({first.problems[0]}{more}); "
            "writing the story again."
        )
        correction = story_correction(
            first.problems, request.mode, [note.id for note in request.notes]
        )
        second = yield from self._attempt(request, correction=correction)
        usage = _total(first.usage, second.usage)
        if second.problems:
            detail = "; ".join(second.problems)
            raise AgentError(
                "invalid_model_output",
                f"The AI model returned an unusable story twice; {request.mode} mode needs "
                f"{_MODE_NEEDS[request.mode]}.",
                retryable=False,
                detail=detail if len(detail) <= _DETAIL_LIMIT else detail[:_DETAIL_LIMIT] + "...",
            )
        yield StoryResult(chapters=second.chapters, usage=usage)

    def _attempt(
        self, request: StoryRequest, *, correction: str | None
    ) -> Generator[ChapterDraft, None, _Attempt]:
        """One streamed generation: yields its chapters, returns how it went."""
        contents: types.ContentListUnionDict = request.context
        if correction is not None:
            contents = types.Content(
                role="user",
                parts=[
                    types.Part.from_text(text=request.context),
                    types.Part.from_text(text=correction),
                ],
            )
        parser = ChapterStreamParser()
        assembler = StoryAssembler(request.notes, request.mode)
        usage = Usage(model=request.model)
        chunks = gemini.stream_routed(
            self._settings,
            route=self._settings.story,
            contents=contents,
            config=request.config,
            timeout_ms=self._settings.story_timeout_ms,
            temperature=request.temperature,
        )
        try:
            for model, chunk in chunks:
                if chunk.usage_metadata is not None:  # cumulative: the last one counts
                    usage = gemini.usage_of(chunk, model)
                for section in parser.feed(gemini.response_text(chunk)):
                    chapter = assembler.add(section)
                    if chapter is not None:
                        yield chapter
                if assembler.doomed:
                    break  # closing the stream stops the generation
        finally:
            chunks.close()
        try:
            chapters = assembler.finish(started=parser.started, complete=parser.complete)
        except InvalidStory as exc:
            log.warning("story answer unusable", extra={
                "model": request.model, "mode": request.mode, "problems": list(exc.problems),
                "corrected": correction is not None,
            })
            return _Attempt((), usage, exc.problems)
        if assembler.repairs:
            log.info("story answer repaired", extra={
                "model": request.model, "mode": request.mode, "repairs": assembler.repairs,
            })
        return _Attempt(chapters, usage)
