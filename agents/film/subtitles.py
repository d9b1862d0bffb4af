"""Narration text as readable subtitle cues, timed across each scene's narration, as WebVTT.

A cue holds a sentence, or a piece of one at most ``MAX_CUE_CHARS`` long cut at a comma or a
word, wrapped on two balanced lines of at most ``MAX_LINE_CHARS``; cues share the narration's
time in proportion to their length, each on screen at least ``MIN_CUE_SECONDS`` when it fits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LINE_CHARS = 42
MAX_CUE_CHARS = 2 * MAX_LINE_CHARS
MIN_CUE_SECONDS = 1.2
_SHORT_CHARS = 16  # a fragment this short joins the cue before it when both fit
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")
_SOFT_BREAK = re.compile(r"[,;:\u2014\u2013]\s")  # comma, colon, em or en dash


@dataclass(frozen=True)
class Cue:
    """A subtitle on screen from ``start`` to ``end`` seconds."""

    start: float
    end: float
    text: str  # one or two lines, joined by a newline


def _pieces(sentence: str) -> list[str]:
    """Cut a long sentence at the last comma (else space) before the limit, repeatedly."""
    pieces: list[str] = []
    rest = sentence
    while len(rest) > MAX_CUE_CHARS:
        window = rest[: MAX_CUE_CHARS + 1]
        soft = [m.end() for m in _SOFT_BREAK.finditer(window) if m.end() > MAX_CUE_CHARS // 2]
        cut = soft[-1] if soft else window.rfind(" ")
        if cut <= 0:
            cut = MAX_CUE_CHARS  # one unbroken word longer than a cue
        pieces.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    if rest:
        pieces.append(rest)
    return pieces


def split_text(text: str) -> list[str]:
    """The cue texts of a narration, in order, without line breaks yet."""
    words = " ".join(text.split())
    if not words:
        return []
    chunks: list[str] = []
    for sentence in _SENTENCE_END.split(words):
        for piece in _pieces(sentence):
            if chunks and (len(piece) < _SHORT_CHARS or len(chunks[-1]) < _SHORT_CHARS) and (
                len(chunks[-1]) + 1 + len(piece) <= MAX_CUE_CHARS
            ):
                chunks[-1] = f"{chunks[-1]} {piece}"
            else:
                chunks.append(piece)
    return chunks


def wrap(text: str) -> str:
    """One line if it fits, else two lines broken at the space nearest the middle."""
    if len(text) <= MAX_LINE_CHARS:
        return text
    middle = len(text) // 2
    spaces = [i for i, char in enumerate(text) if char == " "]
    if not spaces:
        return text
    cut = min(spaces, key=lambda i: abs(i - middle))
    return f"{text[:cut]}\n{text[cut + 1:]}"


def timed_cues(text: str, start: float, end: float) -> list[Cue]:
    """Cues for ``text`` spread over ``[start, end]`` in proportion to their length."""
    chunks = split_text(text)
    if not chunks or end <= start:
        return []
    span = end - start
    # Keep a minimum on screen by merging neighbours while the cues would flash by.
    while len(chunks) > 1 and span / len(chunks) < MIN_CUE_SECONDS:
        shortest = min(range(len(chunks) - 1), key=lambda i: len(chunks[i]) + len(chunks[i + 1]))
        chunks[shortest: shortest + 2] = [f"{chunks[shortest]} {chunks[shortest + 1]}"]
    weights = [len(chunk) + 8 for chunk in chunks]  # + a pause's worth per cue
    total = sum(weights)
    cues: list[Cue] = []
    at = start
    for chunk, weight in zip(chunks, weights, strict=True):
        until = at + span * weight / total
        cues.append(Cue(round(at, 3), round(until, 3), wrap(chunk)))
        at = until
    return cues


def _timestamp(seconds: float) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_webvtt(cues: list[Cue]) -> str:
    """A WebVTT document of the cues."""
    blocks = ["WEBVTT"]
    for number, cue in enumerate(cues, start=1):
        blocks.append(f"{number}\n{_timestamp(cue.start)} --> {_timestamp(cue.end)}\n"
                      f"{_escape(cue.text)}")
    return "\n\n".join(blocks) + "\n"
