"""The agents' interfaces and the choice between the Gemini and the offline implementations."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from agents.config import AgentSettings
from agents.film_script import GeminiScriptWriter
from agents.illustration import GeminiIllustrator
from agents.narrator import (
    ClipFailed,
    ClipPending,
    ClipRequest,
    FinishedClip,
    GeminiClipMaker,
    GeneratedClip,
    OfflineClipMaker,
    StartedClip,
)
from agents.offline import (
    OfflineIllustrator,
    OfflineNarrator,
    OfflineScriptWriter,
    OfflineStoryBuilder,
    OfflineTranscriber,
)
from agents.speech import GeminiNarrator
from agents.story_builder import GeminiStoryBuilder
from agents.transcription import GeminiTranscriber
from agents.types import (
    ChapterInput,
    ImageResult,
    NoteInput,
    ScriptResult,
    SpeechResult,
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


@runtime_checkable
class ScriptWriter(Protocol):
    """A story version's chapters in, a film script (one scene per chapter) out."""

    @property
    def model(self) -> str: ...

    @property
    def prompt_version(self) -> str: ...

    def write(self, chapters: Sequence[ChapterInput], title: str, tone: str) -> ScriptResult: ...


@runtime_checkable
class Narrator(Protocol):
    """A text, a voice style (``agents.types.VOICE_STYLES``) and optionally a BCP 47 language
    in, spoken audio out as a WAV file."""

    @property
    def model(self) -> str: ...

    @property
    def prompt_version(self) -> str: ...

    def narrate(
        self, text: str, voice_style: str, language: str | None = None
    ) -> SpeechResult: ...


@runtime_checkable
class ClipMaker(Protocol):
    """A photo and a script in, a talking clip out. ``start`` (the call that costs money)
    answers with an upstream operation, or with the clip itself when it is made locally;
    ``poll`` says how the operation stands (as often as needed), ``fetch`` brings a finished
    one's clip into ``workdir``."""

    @property
    def model(self) -> str: ...

    @property
    def prompt_version(self) -> str: ...

    def start(self, request: ClipRequest, workdir: Path) -> StartedClip | GeneratedClip: ...

    def poll(self, started: StartedClip) -> ClipPending | ClipFailed | FinishedClip: ...

    def fetch(self, finished: FinishedClip, workdir: Path) -> GeneratedClip: ...


@dataclass(frozen=True)
class Provider:
    """The agents of one provider; ``mode`` is what /ready and logs report."""

    mode: ProviderMode
    transcriber: Transcriber
    story_builder: StoryBuilder
    illustrator: Illustrator
    script_writer: ScriptWriter
    narrator: Narrator
    clip_maker: ClipMaker


def build_provider(settings: AgentSettings) -> Provider:
    """Gemini agents when an API key is configured, the offline provider otherwise."""
    if settings.has_api_key:
        return Provider(
            mode="gemini",
            transcriber=GeminiTranscriber(settings),
            story_builder=GeminiStoryBuilder(settings),
            illustrator=GeminiIllustrator(settings),
            script_writer=GeminiScriptWriter(settings),
            narrator=GeminiNarrator(settings),
            clip_maker=GeminiClipMaker(settings),
        )
    return Provider(
        mode="offline",
        transcriber=OfflineTranscriber(),
        story_builder=OfflineStoryBuilder(settings.offline_chapter_delay_ms / 1000),
        illustrator=OfflineIllustrator(),
        script_writer=OfflineScriptWriter(),
        narrator=OfflineNarrator(),
        clip_maker=OfflineClipMaker(),
    )
