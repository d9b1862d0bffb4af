"""The fake Gemini's film scripts: a request whose JSON response schema has ``scenes`` is a
film script; it answers one scene per chapter id of the context.

Chapter-id convention (shared with ``agents.film_script.build_script_context``): every chapter
has a line that starts at column 0 with ``chapter: <id>``; chapter text is indented.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

CHAPTER_ID_LINE = re.compile(r"^chapter: (\S+)[ \t]*$", re.MULTILINE)
_TRANSITIONS = ("fade", "slide", "zoom")
# The words of a made-up narration, cycled to the length asked for.
_WORDS = ("we", "walked", "along", "the", "river", "while", "the", "light", "turned", "gold",
          "and", "the", "city", "slowly", "woke", "around", "us")


def is_script_request(config: Mapping[str, Any]) -> bool:
    schema = config.get("responseSchema")
    return isinstance(schema, Mapping) and "scenes" in (schema.get("properties") or {})


def narration(words: int, chapter_number: int) -> str:
    """A sentence of ``words`` words (a narrator reads ~2.5 a second)."""
    picked = [_WORDS[(i + chapter_number) % len(_WORDS)] for i in range(max(1, words))]
    return " ".join(picked).capitalize() + "."


def script_answer(prompt_text: str, narration_words: int) -> str:
    """One scene per chapter id found in the prompt, in order."""
    ids = list(dict.fromkeys(CHAPTER_ID_LINE.findall(prompt_text)))
    scenes = [{
        "chapterId": chapter_id,
        "narrationText": narration(narration_words, number),
        "visualDescription": f"A wide shot for chapter {number}",
        "durationSeconds": max(8, min(45, round(narration_words / 2.5))),
        "transition": _TRANSITIONS[number % len(_TRANSITIONS)],
    } for number, chapter_id in enumerate(ids)]
    return json.dumps({"title": "A fake film", "musicMood": "calm", "scenes": scenes,
                       "totalDurationSeconds": sum(s["durationSeconds"] for s in scenes)})
