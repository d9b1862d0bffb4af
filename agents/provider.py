"""The agents' interfaces and the choice between the Gemini and the offline implementations."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from agents.config import AgentSettings
from agents.illustration import GeminiIllustrator
from agents.offline import OfflineIllustrator, OfflineStoryBuilder, OfflineTranscriber
from agents.story_builder import GeminiStoryBuilder
from agents.transcription import GeminiTranscriber
from agents.types import (
    ImageResult,
    NoteInput,
    StoryResult,
    StorySettings,
    StoryStreamItem,
    TranscriptionResult,
)

ProviderMode = Literal["gemini", "offline"]


@runtime_checkable
class Transcriber(Protocol):
    """Audio in, text out. ``model`` and ``prompt_version`` belong in every cache key."""

    @property
    def model(self) -> str: ...

    @property
    def prompt_version(self) -> str: ...

    def transcribe(self, audio: bytes, mime_type: str) -> TranscriptionResult: ...


@runtime_checkable
class StoryBuilder(Protocol):
    """A space's notes in, chapters out.

    ``stream`` yields each ``ChapterDraft`` as soon as it is written, possibly a
    ``StoryRestart`` (discard the chapters so far; they come again), and last one
    ``StoryResult`` holding exactly the chapters yielded since the last restart. ``build``
    returns that ``StoryResult``.
    """

    @property
    def model(self) -> str: ...

    @property
    def prompt_version(self) -> str: ...

    def build(
        self, notes: Sequence[NoteInput], space_title: str, settings: StorySettings
    ) -> StoryResult: ...

    def stream(
        self, notes: Sequence[NoteInput], space_title: str, settings: StorySettings
    ) -> Iterator[StoryStreamItem]: ...


@runtime_checkable
class Illustrator(Protocol):
    """A scene and a style in, a 4:3 image out."""

    @property
    def model(self) -> str: ...

    @property
    def prompt_version(self) -> str: ...

    def illustrate(self, prompt: str, style: str) -> ImageResult: ...


@dataclass(frozen=True)
class Provider:
    """The three agents of one provider; ``mode`` is what /ready and logs report."""

    mode: ProviderMode
    transcriber: Transcriber
    story_builder: StoryBuilder
    illustrator: Illustrator


def build_provider(settings: AgentSettings) -> Provider:
    """Gemini agents when an API key is configured, the offline provider otherwise."""
    if settings.has_api_key:
        return Provider(
            mode="gemini",
            transcriber=GeminiTranscriber(settings),
            story_builder=GeminiStoryBuilder(settings),
            illustrator=GeminiIllustrator(settings),
        )
    return Provider(
        mode="offline",
        transcriber=OfflineTranscriber(),
        story_builder=OfflineStoryBuilder(settings.offline_chapter_delay_ms / 1000),
        illustrator=OfflineIllustrator(),
    )
