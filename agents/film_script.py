"""Film script agent: a story version's chapters in, a ``VideoScript`` out (one scene per
chapter), with Gemini's JSON schema output.

The answer is checked like a story's: what is safe to repair is repaired (scene order, a
duration out of range, an unknown transition or mood, an empty description, a missing
narration read from the chapter itself, an unknown chapter id that only its position can
mean); anything else is asked for once more with a correction, then fails with
``invalid_model_output``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.genai import types

from agents import gemini
from agents.config import AgentSettings
from agents.errors import AgentError
from agents.models import availability
from agents.prompts import (
    FILM_SCRIPT_INSTRUCTION,
    FILM_SCRIPT_PROMPT_VERSION,
    TONE_INSTRUCTIONS,
    film_script_correction,
)
from agents.types import (
    MUSIC_MOODS,
    TRANSITIONS,
    ChapterInput,
    ScriptResult,
    ScriptScene,
    Usage,
    VideoScript,
)

log = logging.getLogger(__name__)

SCENE_MIN_S, SCENE_MAX_S = 8, 45
MAX_SCENES = 60
# Chapter-id convention, shared with tests/fakes/gemini_server.py: each chapter of the context
# has a line starting at column 0 with this prefix and its id; chapter text is indented.
CHAPTER_ID_PREFIX = "chapter: "
_INDENT = "  "
WORDS_PER_SECOND = 2.5  # a calm narrator
# A narration read from the chapter when the model left it empty: at most this many words.
_FALLBACK_NARRATION_WORDS = int(SCENE_MAX_S * WORDS_PER_SECOND)
_DETAIL_LIMIT = 300


def check_script_input(chapters: Sequence[ChapterInput]) -> None:
    if not chapters:
        raise AgentError("invalid_input", "A film needs a story with at least one chapter.",
                         retryable=False)
    if len(chapters) > MAX_SCENES:
        raise AgentError("too_many_scenes",
                         f"A film has at most {MAX_SCENES} scenes; this story has "
                         f"{len(chapters)} chapters.", retryable=False)
    if len({c.id for c in chapters}) != len(chapters):
        raise AgentError("invalid_input", "Chapter ids must be unique.", retryable=False)


def _lines(name: str, text: str) -> list[str]:
    rows = text.strip().replace("\r\n", "\n").split("\n")
    return [f"{_INDENT}{name}: {rows[0]}", *(f"{_INDENT}{_INDENT}{row}" for row in rows[1:])]


def build_script_context(chapters: Sequence[ChapterInput], title: str, tone: str) -> str:
    """What the model reads: the story's title, the tone, then each chapter under its id."""
    lines = [f"Story: {' '.join(title.split()) or '(untitled)'}", f"Chapters: {len(chapters)}",
             TONE_INSTRUCTIONS.get(tone, "")]
    for number, chapter in enumerate(chapters, start=1):
        lines += ["", f"Chapter {number}", f"{CHAPTER_ID_PREFIX}{chapter.id}",
                  *_lines("title", chapter.title), *_lines("text", chapter.content)]
        if chapter.illustration_prompt:
            lines += _lines("picture", chapter.illustration_prompt)
    return "\n".join(lines) + "\n"


def script_response_schema(scene_count: int) -> types.Schema:
    string = types.Schema(type=types.Type.STRING)
    scene = types.Schema(
        type=types.Type.OBJECT,
        properties={
            "chapterId": string,
            "narrationText": string,
            "visualDescription": string,
            "durationSeconds": types.Schema(type=types.Type.INTEGER, minimum=SCENE_MIN_S,
                                            maximum=SCENE_MAX_S),
            "transition": types.Schema(type=types.Type.STRING, enum=list(TRANSITIONS)),
        },
        required=["chapterId", "narrationText", "visualDescription", "durationSeconds",
                  "transition"],
        property_ordering=["chapterId", "narrationText", "visualDescription",
                           "durationSeconds", "transition"],
    )
    return types.Schema(
        type=types.Type.OBJECT,
        properties={
            "title": string,
            "totalDurationSeconds": types.Schema(type=types.Type.INTEGER),
            "musicMood": types.Schema(type=types.Type.STRING, enum=list(MUSIC_MOODS)),
            "scenes": types.Schema(type=types.Type.ARRAY, items=scene, min_items=scene_count,
                                   max_items=scene_count),
        },
        required=["title", "totalDurationSeconds", "musicMood", "scenes"],
        property_ordering=["title", "totalDurationSeconds", "musicMood", "scenes"],
    )


class InvalidScript(Exception):
    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)


def estimated_seconds(text: str) -> int:
    """How long a narration takes to say, within the scene bounds."""
    seconds = math.ceil(len(text.split()) / WORDS_PER_SECOND)
    return max(SCENE_MIN_S, min(SCENE_MAX_S, seconds))


def _text(value: object) -> str:
    return " ".join(value.split()) if isinstance(value, str) else ""


def _duration(value: object, narration: str, repairs: list[str], where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        repairs.append(f"{where}: durationSeconds estimated from the narration")
        return estimated_seconds(narration)
    seconds = round(value)
    if not SCENE_MIN_S <= seconds <= SCENE_MAX_S:
        repairs.append(f"{where}: durationSeconds {seconds} brought into "
                       f"{SCENE_MIN_S}-{SCENE_MAX_S}")
        seconds = max(SCENE_MIN_S, min(SCENE_MAX_S, seconds))
    return seconds


def _assign_chapters(raw: Sequence[Mapping[str, Any]], chapters: Sequence[ChapterInput],
                     repairs: list[str]) -> list[tuple[ChapterInput, Mapping[str, Any]]]:
    """Each scene's chapter: by id; an unknown or repeated id only by its position, when the
    scenes are exactly as many as the chapters and every other scene sits at its own."""
    by_id = {c.id: c for c in chapters}
    seen: dict[str, int] = {}
    unresolved: list[int] = []
    for index, scene in enumerate(raw):
        chapter_id = _text(scene.get("chapterId"))
        if chapter_id in by_id and chapter_id not in seen:
            seen[chapter_id] = index
        else:
            unresolved.append(index)
    if unresolved:
        in_place = all(chapters[i].id == cid for cid, i in seen.items() if i < len(chapters))
        if len(raw) == len(chapters) and in_place:
            for index in unresolved:
                seen[chapters[index].id] = index
                repairs.append(f"scene {index + 1}: chapterId set to {chapters[index].id!r} "
                               "by position")
        else:
            problems = [f"scene {i + 1} names chapterId "
                        f"{json.dumps(_text(raw[i].get('chapterId'))[:60])}, which is not a "
                        "chapter or is named twice" for i in unresolved]
            missing = [c.id for c in chapters if c.id not in seen]
            if missing:
                problems.append(f"no scene for chapter(s) {', '.join(missing)}")
            raise InvalidScript(problems)
    missing = [c.id for c in chapters if c.id not in seen]
    if missing:
        raise InvalidScript([f"{len(seen)} scene(s) for {len(chapters)} chapters; no scene for "
                             f"chapter(s) {', '.join(missing)}"])
    if [seen[c.id] for c in chapters] != sorted(seen.values()):
        repairs.append("scenes put in the chapters' order")
    return [(c, raw[seen[c.id]]) for c in chapters]


def parse_script(text: str, chapters: Sequence[ChapterInput], title: str,
                 repairs: list[str]) -> VideoScript:
    """Check and repair a whole answer; ``InvalidScript`` with precise problems otherwise."""
    try:
        data = json.loads(text)
    except ValueError:
        raise InvalidScript(["the answer is not valid JSON"]) from None
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
        data = data[0]
    if not isinstance(data, dict) or not isinstance(data.get("scenes"), list):
        raise InvalidScript(["the answer is not a JSON object with a scenes array"])
    raw = [s for s in data["scenes"] if isinstance(s, dict)]
    if len(raw) != len(data["scenes"]):
        raise InvalidScript(["some scenes are not JSON objects"])
    scenes = []
    for chapter, scene in _assign_chapters(raw, chapters, repairs):
        where = f"chapter {chapter.id}"
        narration = _text(scene.get("narrationText"))
        if not narration:
            words = chapter.content.split()
            narration = " ".join(words[:_FALLBACK_NARRATION_WORDS])
            repairs.append(f"{where}: empty narrationText read from the chapter")
        visual = _text(scene.get("visualDescription"))
        if not visual:
            visual = chapter.illustration_prompt or chapter.title
            repairs.append(f"{where}: empty visualDescription taken from the chapter")
        transition = _text(scene.get("transition")).lower()
        if transition not in TRANSITIONS:
            repairs.append(f"{where}: transition {transition[:20]!r} replaced by 'fade'")
            transition = "fade"
        scenes.append(ScriptScene(
            chapter_id=chapter.id, narration_text=narration, visual_description=visual,
            duration_seconds=_duration(scene.get("durationSeconds"), narration, repairs, where),
            transition=transition,
        ))
    mood = _text(data.get("musicMood")).lower()
    if mood not in MUSIC_MOODS:
        repairs.append(f"musicMood {mood[:20]!r} replaced by 'neutral'")
        mood = "neutral"
    return VideoScript(
        title=_text(data.get("title")) or title,
        # Always the sum: the scenes' own durations are what the film is cut to.
        total_duration_seconds=sum(s.duration_seconds for s in scenes),
        music_mood=mood,
        scenes=tuple(scenes),
    )


def script_dict(script: VideoScript) -> dict[str, Any]:
    """The script in the frontend's camelCase ``VideoScript`` shape."""
    return {
        "title": script.title,
        "totalDurationSeconds": script.total_duration_seconds,
        "musicMood": script.music_mood,
        "scenes": [{
            "chapterId": s.chapter_id, "narrationText": s.narration_text,
            "visualDescription": s.visual_description, "durationSeconds": s.duration_seconds,
            "transition": s.transition,
        } for s in script.scenes],
    }


def script_from_dict(data: Mapping[str, Any]) -> VideoScript:
    """The inverse of ``script_dict`` (a script kept on a film row)."""
    return VideoScript(
        title=data["title"], total_duration_seconds=int(data["totalDurationSeconds"]),
        music_mood=data["musicMood"],
        scenes=tuple(ScriptScene(
            chapter_id=s["chapterId"], narration_text=s["narrationText"],
            visual_description=s["visualDescription"],
            duration_seconds=int(s["durationSeconds"]), transition=s["transition"],
        ) for s in data["scenes"]),
    )


@dataclass(frozen=True)
class _Attempt:
    script: VideoScript | None
    usage: Usage
    problems: tuple[str, ...] = ()


class GeminiScriptWriter:
    """Writes a film script with the story route's model (``GEMINI_MODEL_STORY``)."""

    prompt_version = FILM_SCRIPT_PROMPT_VERSION

    def __init__(self, settings: AgentSettings) -> None:
        self._settings = settings

    @property
    def model(self) -> str:
        return availability.active(self._settings.story, self._settings.model_recheck_s)

    def write(self, chapters: Sequence[ChapterInput], title: str, tone: str) -> ScriptResult:
        """One scene per chapter; raises ``AgentError`` on any failure."""
        check_script_input(chapters)
        context = build_script_context(chapters, title, tone)
        config = types.GenerateContentConfig(
            system_instruction=FILM_SCRIPT_INSTRUCTION,
            response_mime_type="application/json",
            response_schema=script_response_schema(len(chapters)),
        )
        first = self._attempt(context, config, chapters, title)
        if first.script is not None:
            return ScriptResult(first.script, first.usage)
        correction = film_script_correction(first.problems, [c.id for c in chapters])
        contents = types.Content(role="user", parts=[types.Part.from_text(text=context),
                                                     types.Part.from_text(text=correction)])
        second = self._attempt(contents, config, chapters, title)
        usage = Usage(model=second.usage.model,
                      input_tokens=first.usage.input_tokens + second.usage.input_tokens,
                      output_tokens=first.usage.output_tokens + second.usage.output_tokens,
                      calls=2)
        if second.script is None:
            detail = "; ".join(second.problems)
            raise AgentError(
                "invalid_model_output",
                "The AI model returned an unusable film script twice; a film needs exactly "
                "one scene per chapter.",
                retryable=False, detail=detail[:_DETAIL_LIMIT],
            )
        return ScriptResult(second.script, usage)

    def _attempt(self, contents: types.ContentListUnionDict,
                 config: types.GenerateContentConfig, chapters: Sequence[ChapterInput],
                 title: str) -> _Attempt:
        response, model = gemini.generate_routed(
            self._settings, route=self._settings.story, contents=contents, config=config,
            timeout_ms=self._settings.story_timeout_ms,
        )
        usage = gemini.usage_of(response, model)
        repairs: list[str] = []
        try:
            script = parse_script(gemini.response_text(response), chapters, title, repairs)
        except InvalidScript as exc:
            log.warning("film script unusable", extra={"model": model,
                                                       "problems": list(exc.problems)})
            return _Attempt(None, usage, exc.problems)
        if repairs:
            log.info("film script repaired", extra={"model": model, "repairs": repairs})
        return _Attempt(script, usage)
