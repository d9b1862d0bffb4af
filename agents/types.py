"""Typed inputs and outputs of the agents: the contract between agents and workers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

NarrativeTone = Literal["cinematic", "funny", "neutral", "emotional", "journalistic", "poetic"]
StoryMode = Literal["transcription", "clean", "creative", "chapter"]
ImageStyle = Literal["illustration", "cinematic", "pastel", "realistic"]
VoiceStyle = Literal["serious", "calm", "warm", "storyteller"]

NARRATIVE_TONES: tuple[str, ...] = (
    "cinematic", "funny", "neutral", "emotional", "journalistic", "poetic",
)
STORY_MODES: tuple[str, ...] = ("transcription", "clean", "creative", "chapter")
IMAGE_STYLES: tuple[str, ...] = ("illustration", "cinematic", "pastel", "realistic")
VOICE_STYLES: tuple[str, ...] = ("serious", "calm", "warm", "storyteller")
# The longest text one narration speaks. TTS models take at most 8,192 input tokens and answer
# at most 16,384 audio tokens (25 a second): 5,000 characters stay under both in any script (at
# worst about a token a character, as in Chinese or Japanese, plus the prompt's notes) and are
# about 5.5 minutes of speech at 15 characters a second, far more than a film scene needs.
MAX_NARRATION_CHARS = 5000


@dataclass(frozen=True)
class StorySettings:
    """The frontend's StorySettings, with its defaults."""

    narrative_tone: str = "cinematic"
    story_mode: str = "chapter"
    creativity: float = 1.0
    image_style: str = "illustration"
    images_per_chapter: int = 1
    voice_style: str = "storyteller"
    background_music: bool = True


# The camelCase key of each StorySettings field, as the frontend and a story job's input carry it.
STORY_SETTINGS_KEYS: dict[str, str] = {
    "narrativeTone": "narrative_tone",
    "storyMode": "story_mode",
    "creativity": "creativity",
    "imageStyle": "image_style",
    "imagesPerChapter": "images_per_chapter",
    "voiceStyle": "voice_style",
    "backgroundMusic": "background_music",
}


@dataclass(frozen=True)
class Usage:
    """Token usage of one model call (from the response's usageMetadata); a video model's
    output is billed by the second instead (``video_seconds``)."""

    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 1
    video_seconds: float = 0.0


@dataclass(frozen=True)
class NoteInput:
    """One moment as the story builder sees it."""

    id: str
    timestamp_ms: int
    title: str | None = None
    text_content: str | None = None
    transcriptions: tuple[str, ...] = ()
    image_count: int = 0


@dataclass(frozen=True)
class TranscriptionResult:
    text: str
    usage: Usage


@dataclass(frozen=True)
class ChapterDraft:
    title: str
    content: str
    illustration_prompt: str | None = None
    source_note_id: str | None = None


@dataclass(frozen=True)
class StoryResult:
    chapters: tuple[ChapterDraft, ...]
    usage: Usage


@dataclass(frozen=True)
class ImageResult:
    data: bytes
    mime_type: str
    width: int
    height: int
    usage: Usage


@dataclass(frozen=True)
class SpeechResult:
    """Spoken audio: a WAV file (``mime_type`` ``audio/wav``) and how long it plays."""

    data: bytes
    mime_type: str
    duration_seconds: float
    usage: Usage


@dataclass(frozen=True)
class StoredMedia:
    """Where a stored file now lives."""

    url: str
    public_id: str
    size: int
    mime_type: str
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class StoryRestart:
    """Discard every ChapterDraft yielded so far: the builder is generating the story again."""

    reason: str


# What a story builder's ``stream()`` yields: chapters as they are written, possibly a restart
# (then chapters again), and last exactly one StoryResult.
StoryStreamItem = ChapterDraft | StoryRestart | StoryResult


MUSIC_MOODS: tuple[str, ...] = ("upbeat", "calm", "emotional", "dramatic", "neutral")
TRANSITIONS: tuple[str, ...] = ("fade", "slide", "zoom")


@dataclass(frozen=True)
class ChapterInput:
    """One chapter of the story version a film is made of, as the script writer reads it."""

    id: str
    title: str
    content: str
    illustration_prompt: str | None = None


@dataclass(frozen=True)
class ScriptScene:
    """One scene of a film: a chapter, narrated."""

    chapter_id: str
    narration_text: str
    visual_description: str
    duration_seconds: int  # 8-45: what the script intends; the narration's length rules
    transition: str  # how the scene is entered: fade | slide | zoom


@dataclass(frozen=True)
class VideoScript:
    """The frontend's VideoScript: one scene per chapter, in the chapters' order."""

    title: str
    total_duration_seconds: int
    music_mood: str
    scenes: tuple[ScriptScene, ...]


@dataclass(frozen=True)
class ScriptResult:
    script: VideoScript
    usage: Usage
