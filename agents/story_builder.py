"""Story builder agent: a space's notes in, chapters out (Gemini flash, JSON schema output).

The work is split so a streamed version can reuse it: ``build_story_request`` prepares the
call, ``parse_chapters`` turns the model's whole JSON text into validated chapters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import groupby

import pydantic
from google.genai import types

from agents import gemini
from agents.config import AgentSettings
from agents.errors import AgentError
from agents.prompts import (
    MODE_INSTRUCTIONS,
    STORY_PROMPT_VERSION,
    TONE_INSTRUCTIONS,
    story_system_instruction,
)
from agents.types import ChapterDraft, NoteInput, StoryResult, StorySettings

# Modes whose answer must be exactly one section per note, each naming its note.
ONE_SECTION_PER_NOTE_MODES: frozenset[str] = frozenset({"transcription", "chapter"})

# Note-id convention, shared with tests/fakes/gemini_server.py: each note of the context has a
# line starting at column 0 with this prefix followed by the id. User-written text is always
# indented, so no other line of the context can start with it.
NOTE_ID_PREFIX = "id: "
_INDENT = "  "
# Not strftime's %A: that follows the process locale, and the context must not.
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_FENCED = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


class ChapterOut(pydantic.BaseModel):
    """One section as the model must return it (camelCase, like the frontend's Chapter)."""

    model_config = pydantic.ConfigDict(
        populate_by_name=True, extra="ignore", str_strip_whitespace=True
    )

    title: str = pydantic.Field(min_length=1)
    content: str = pydantic.Field(min_length=1)
    illustration_prompt: str | None = pydantic.Field(default=None, alias="illustrationPrompt")
    source_note_id: str | None = pydantic.Field(default=None, alias="sourceNoteId")


_CHAPTER_LIST = pydantic.TypeAdapter(list[ChapterOut])


@dataclass(frozen=True)
class StoryRequest:
    """Everything one story call sends: what the model reads and how it must answer."""

    model: str
    context: str
    config: types.GenerateContentConfig
    notes: tuple[NoteInput, ...]
    mode: str


def temperature_for(creativity: float) -> float:
    """The frontend's rule: ``min(1.5, creativity * 0.75)``, never below 0."""
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
    """Prepare one story call (shared by the unary and a future streamed version)."""
    check_story_input(notes, settings)
    ordered = tuple(sort_notes(notes))
    config = types.GenerateContentConfig(
        system_instruction=story_system_instruction(settings.narrative_tone, settings.story_mode),
        temperature=temperature_for(settings.creativity),
        response_mime_type="application/json",
        response_schema=story_response_schema(settings.story_mode, len(ordered)),
    )
    return StoryRequest(
        model=model,
        context=build_story_context(ordered, space_title),
        config=config,
        notes=ordered,
        mode=settings.story_mode,
    )


def _invalid(message: str) -> AgentError:
    # The model may well do better on the next attempt.
    return AgentError("invalid_output", message, retryable=True)


def _strip_fences(text: str) -> str:
    # JSON mode should not fence its answer, but a fenced one is still a good answer.
    match = _FENCED.match(text)
    return match.group(1) if match else text.strip()


def parse_chapters(
    text: str, notes: Sequence[NoteInput], mode: str
) -> tuple[ChapterDraft, ...]:
    """Parse the model's JSON answer and validate it against the notes and the mode."""
    try:
        data = json.loads(_strip_fences(text))
    except ValueError as exc:
        raise _invalid("The story is not valid JSON.") from exc
    if isinstance(data, dict) and isinstance(data.get("chapters"), list):
        data = data["chapters"]
    try:
        parsed = _CHAPTER_LIST.validate_python(data)
    except pydantic.ValidationError as exc:
        raise _invalid(
            f"The story does not match the chapter schema ({exc.error_count()} errors)."
        ) from exc
    drafts = [
        ChapterDraft(
            title=c.title,
            content=c.content,
            illustration_prompt=c.illustration_prompt or None,
            source_note_id=c.source_note_id or None,
        )
        for c in parsed
    ]
    return validate_chapters(drafts, notes, mode)


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


class GeminiStoryBuilder:
    """Writes a story from notes with Gemini flash."""

    prompt_version = STORY_PROMPT_VERSION

    def __init__(self, settings: AgentSettings) -> None:
        self._settings = settings

    @property
    def model(self) -> str:
        return self._settings.model_flash

    def build(
        self, notes: Sequence[NoteInput], space_title: str, settings: StorySettings
    ) -> StoryResult:
        """Write the story's chapters; raises ``AgentError`` on any failure."""
        request = build_story_request(notes, space_title, settings, self.model)
        response = gemini.generate(
            self._settings,
            model=request.model,
            contents=request.context,
            config=request.config,
            timeout_ms=self._settings.story_timeout_ms,
        )
        chapters = parse_chapters(gemini.response_text(response), request.notes, request.mode)
        return StoryResult(chapters=chapters, usage=gemini.usage_of(response, self.model))
