"""The offline provider: deterministic, local, instant stand-ins for the Gemini agents.

Used when no ``GEMINI_API_KEY`` is set so the whole platform runs on a laptop. Inputs are
validated exactly like the Gemini agents do, and stories obey the same mode rules.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import shutil
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

from PIL import Image, ImageDraw, ImageFont

from agents.errors import AgentError
from agents.film_script import (
    SCENE_MAX_S,
    WORDS_PER_SECOND,
    check_script_input,
    estimated_seconds,
)
from agents.illustration import check_illustration_input
from agents.speech import (
    WAV_MIME_TYPE,
    check_speech_input,
    spoken_seconds,
    wav_bytes,
    wav_duration,
)
from agents.story_builder import (
    ONE_SECTION_PER_NOTE_MODES,
    check_story_input,
    sort_notes,
    validate_chapters,
)
from agents.transcription import check_audio
from agents.types import (
    TRANSITIONS,
    ChapterDraft,
    ChapterInput,
    ImageResult,
    NoteInput,
    ScriptResult,
    ScriptScene,
    SpeechResult,
    StoryResult,
    StorySettings,
    StoryStreamItem,
    TranscriptionResult,
    Usage,
    VideoScript,
)

log = logging.getLogger(__name__)

OFFLINE_MODEL = "offline"
IMAGE_WIDTH, IMAGE_HEIGHT = 800, 600  # 4:3, like the Gemini illustrations

_TONE_OPENERS: dict[str, str] = {
    "cinematic": "The scene opens on {day}.",
    "funny": "Picture this, {day}, and try not to laugh.",
    "neutral": "On {day}:",
    "emotional": "{day} is a day to remember.",
    "journalistic": "Report, {day}.",
    "poetic": "Under the light of {day},",
}
_ARC_LABELS = ("Beginning", "Turning point", "Journey", "Ending")


def _usage() -> Usage:
    return Usage(model=OFFLINE_MODEL, input_tokens=0, output_tokens=0)


def _day(note: NoteInput) -> str:
    return f"{datetime.fromtimestamp(note.timestamp_ms / 1000, tz=UTC):%Y-%m-%d}"


def _words(note: NoteInput) -> str:
    pieces = [note.text_content or "", *note.transcriptions]
    text = "\n\n".join(p.strip() for p in pieces if p and p.strip())
    if text:
        return text
    if note.image_count:
        return f"A moment captured in {note.image_count} photo(s)."
    return "A moment without words."


def _title(note: NoteInput) -> str:
    if note.title and note.title.strip():
        return " ".join(note.title.split())
    first_words = " ".join(_words(note).split()[:6])
    return first_words or f"Moment of {_day(note)}"


def _scene(title: str, words: str) -> str:
    return f"{title}: {' '.join(words.split()[:16])}"


def _split_evenly(notes: Sequence[NoteInput], parts: int) -> list[list[NoteInput]]:
    """Contiguous groups of near-equal size (earlier groups take the remainder)."""
    size, extra = divmod(len(notes), parts)
    groups, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        groups.append(list(notes[start:end]))
        start = end
    return groups


def offline_chapter_count(mode: str, note_count: int) -> int:
    """How many chapters the offline builder writes for a mode (the frontend's rules)."""
    if mode in ONE_SECTION_PER_NOTE_MODES:
        return note_count
    half = math.ceil(note_count / 2)
    return max(2, half) if mode == "creative" else max(1, half)


class OfflineTranscriber:
    """Answers with a placeholder describing the audio instead of its words."""

    model = OFFLINE_MODEL
    prompt_version = "offline-transcription-v1"

    def transcribe(self, audio: bytes, mime_type: str) -> TranscriptionResult:
        """A deterministic placeholder built from the audio's type, size and hash."""
        normalized = check_audio(audio, mime_type)
        digest = hashlib.sha256(audio).hexdigest()[:8]
        text = (
            f"[offline transcription] {normalized}, {len(audio) / 1024:.1f} KB, sha256 {digest}"
        )
        return TranscriptionResult(text=text, usage=_usage())


class OfflineStoryBuilder:
    """Builds real chapters from the notes' own words, following the mode's rules."""

    model = OFFLINE_MODEL
    prompt_version = "offline-story-v1"

    def __init__(self, chapter_delay_s: float = 0.0) -> None:
        self.chapter_delay_s = chapter_delay_s

    def build(
        self, notes: Sequence[NoteInput], space_title: str, settings: StorySettings
    ) -> StoryResult:
        """Chapters from the notes: one per note, or grouped for clean/creative modes."""
        check_story_input(notes, settings)
        ordered = sort_notes(notes)
        mode = settings.story_mode
        opener = _TONE_OPENERS.get(settings.narrative_tone, _TONE_OPENERS["neutral"])
        if mode in ONE_SECTION_PER_NOTE_MODES:
            chapters = [self._note_chapter(note, mode, opener) for note in ordered]
        else:
            count = offline_chapter_count(mode, len(ordered))
            groups = _split_evenly(ordered, min(count, len(ordered)))
            chapters = [
                self._group_chapter(group, index, mode, opener)
                for index, group in enumerate(groups)
            ]
            if len(chapters) < count:
                chapters.append(self._epilogue(space_title, ordered))
        return StoryResult(chapters=validate_chapters(chapters, ordered, mode), usage=_usage())

    def stream(
        self, notes: Sequence[NoteInput], space_title: str, settings: StorySettings
    ) -> Iterator[StoryStreamItem]:
        """The chapters of ``build()`` one by one, each after ``chapter_delay_s`` (0: at once),
        then its result."""
        result = self.build(notes, space_title, settings)
        for chapter in result.chapters:
            if self.chapter_delay_s:
                time.sleep(self.chapter_delay_s)
            yield chapter
        yield result

    @staticmethod
    def _note_chapter(note: NoteInput, mode: str, opener: str) -> ChapterDraft:
        title, words = _title(note), _words(note)
        content = words if mode == "transcription" else f"{opener.format(day=_day(note))} {words}"
        return ChapterDraft(
            title=title,
            content=content,
            illustration_prompt=_scene(title, words),
            source_note_id=note.id,
        )

    @staticmethod
    def _group_chapter(
        group: Sequence[NoteInput], index: int, mode: str, opener: str
    ) -> ChapterDraft:
        first = group[0]
        words = "\n\n".join(_words(note) for note in group)
        title = _title(first)
        if mode == "creative":
            title = f"{_ARC_LABELS[min(index, len(_ARC_LABELS) - 1)]}: {title}"
        days = sorted({_day(note) for note in group})
        span = days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"
        return ChapterDraft(
            title=title,
            content=f"{opener.format(day=span)} {words}",
            illustration_prompt=_scene(_title(first), words),
            source_note_id=first.id,
        )

    @staticmethod
    def _epilogue(space_title: str, notes: Sequence[NoteInput]) -> ChapterDraft:
        name = " ".join(space_title.split()) or "this story"
        return ChapterDraft(
            title="Epilogue",
            content=f"And so {name} comes to a close, {_day(notes[-1])}, with more to come.",
            illustration_prompt=f"A quiet closing scene for {name}",
            source_note_id=None,
        )


class OfflineIllustrator:
    """Draws a simple 800x600 PNG whose colours and text come from the prompt and style."""

    model = OFFLINE_MODEL
    prompt_version = "offline-illustration-v1"

    def illustrate(self, prompt: str, style: str) -> ImageResult:
        """A deterministic 4:3 PNG: same prompt and style, same bytes."""
        scene = check_illustration_input(prompt, style)
        digest = hashlib.sha256(f"{style}\n{scene}".encode()).digest()
        data = _draw(scene, style, digest)
        return ImageResult(
            data=data, mime_type="image/png", width=IMAGE_WIDTH, height=IMAGE_HEIGHT,
            usage=_usage(),
        )


def _colour(digest: bytes, offset: int) -> tuple[int, int, int]:
    r, g, b = digest[offset : offset + 3]
    return (r, g, b)


def _draw(scene: str, style: str, digest: bytes) -> bytes:
    top, bottom = _colour(digest, 0), _colour(digest, 3)
    size = (IMAGE_WIDTH, IMAGE_HEIGHT)
    # linear_gradient runs black (top) to white (bottom): the mask picks bottom where white.
    mask = Image.linear_gradient("L").resize(size)
    image = Image.composite(Image.new("RGB", size, bottom), Image.new("RGB", size, top), mask)
    draw = ImageDraw.Draw(image)

    sun_x = 100 + digest[6] * 600 // 255
    sun_r = 40 + digest[7] % 50
    draw.ellipse((sun_x - sun_r, 90 - sun_r, sun_x + sun_r, 90 + sun_r), fill=_colour(digest, 8))
    for layer in range(3):
        base = 380 + layer * 60
        peaks = [(0, IMAGE_HEIGHT), (0, base)]
        for step in range(1, 9):
            height = digest[11 + layer * 4 + step % 4] % 90
            peaks.append((step * IMAGE_WIDTH // 8, base - height))
        peaks.append((IMAGE_WIDTH, IMAGE_HEIGHT))
        draw.polygon(peaks, fill=_colour(digest, 20 + layer * 3))

    title_font = ImageFont.load_default(size=34)
    body_font = ImageFont.load_default(size=22)
    draw.rectangle((24, 440, IMAGE_WIDTH - 24, IMAGE_HEIGHT - 24), fill=(255, 255, 255))
    draw.text((44, 452), f"{style} - offline", fill=(30, 30, 30), font=title_font)
    caption = " ".join(scene.split()[:18])
    for row, line in enumerate(textwrap.wrap(caption, width=60)[:3]):
        draw.text((44, 500 + row * 26), line, fill=(60, 60, 60), font=body_font)

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


# Music moods that suit each narrative tone (the offline script's choice).
_TONE_MOODS: dict[str, str] = {
    "cinematic": "dramatic", "funny": "upbeat", "neutral": "neutral",
    "emotional": "emotional", "journalistic": "neutral", "poetic": "calm",
}


class OfflineScriptWriter:
    """A deterministic script: each chapter's own text is its narration."""

    model = OFFLINE_MODEL
    prompt_version = "offline-film-script-v1"

    def write(self, chapters: Sequence[ChapterInput], title: str, tone: str) -> ScriptResult:
        check_script_input(chapters)
        scenes = []
        for index, chapter in enumerate(chapters):
            words = chapter.content.split()[:int(SCENE_MAX_S * WORDS_PER_SECOND)]
            narration = " ".join(words) or chapter.title
            scenes.append(ScriptScene(
                chapter_id=chapter.id,
                narration_text=narration,
                visual_description=chapter.illustration_prompt or chapter.title,
                duration_seconds=estimated_seconds(narration),
                transition=TRANSITIONS[index % len(TRANSITIONS)],
            ))
        script = VideoScript(
            title=title.strip() or "Untitled",
            total_duration_seconds=sum(s.duration_seconds for s in scenes),
            music_mood=_TONE_MOODS.get(tone, "neutral"),
            scenes=tuple(scenes),
        )
        return ScriptResult(script, _usage())
# espeak-ng's speed (words a minute; its default 175) and pitch (0-99; default 50) per voice
# style: the offline stand-in for the Gemini voices and their director's notes.
ESPEAK_STYLES: dict[str, tuple[int, int]] = {
    "serious": (150, 35),
    "calm": (135, 45),
    "warm": (155, 58),
    "storyteller": (160, 50),
}
ESPEAK_TIMEOUT_S = 60  # 5,000 characters take espeak-ng about 2 s
SILENCE_RATE = 24_000  # the rate of Gemini's speech
MIN_SILENCE_S = 0.5


class OfflineNarrator:
    """Speaks with espeak-ng when it is installed; otherwise answers silence as long as the text
    would take to say (``agents.speech.CHARS_PER_SECOND``, 15 characters a second, at least
    half a second). Deterministic either way: same text and style, same bytes."""

    model = OFFLINE_MODEL

    def __init__(self, espeak: str | None = None, *, find_espeak: bool = True) -> None:
        """``espeak``: the espeak-ng binary; with none given it is looked up on the PATH
        unless ``find_espeak`` is False (then every narration is silent)."""
        self.espeak = espeak or (shutil.which("espeak-ng") if find_espeak else None)

    @property
    def prompt_version(self) -> str:
        # Spoken and silent narrations of one text differ: never let one answer for the other.
        return "offline-speech-espeak-v1" if self.espeak else "offline-speech-silent-v1"

    def narrate(self, text: str, voice_style: str, language: str | None = None) -> SpeechResult:
        """A WAV of the text spoken by espeak-ng, or of silence of its spoken length."""
        spoken = check_speech_input(text, voice_style, language)
        if self.espeak:
            data = self._espeak(spoken, voice_style, language)
        else:
            frames = round(max(MIN_SILENCE_S, spoken_seconds(spoken)) * SILENCE_RATE)
            data = wav_bytes(bytes(2 * frames), SILENCE_RATE)
        return SpeechResult(data=data, mime_type=WAV_MIME_TYPE,
                            duration_seconds=wav_duration(data), usage=_usage())

    def _espeak(self, text: str, voice_style: str, language: str | None) -> bytes:
        assert self.espeak is not None
        speed, pitch = ESPEAK_STYLES[voice_style]
        # The language's own voice, else its primary subtag's (pt-BR -> pt), else espeak's own.
        voices: list[str | None] = [language, language.split("-")[0]] if language else []
        voices.append(None)
        with tempfile.TemporaryDirectory(prefix="lifetales-espeak-") as tmp:
            out = f"{tmp}/narration.wav"
            for voice in dict.fromkeys(voices):
                # The text goes through stdin: a text starting with "-" is never an option.
                command = [self.espeak, "--stdin", "-s", str(speed), "-p", str(pitch), "-w", out,
                           *(["-v", voice.lower()] if voice else [])]
                try:
                    done = subprocess.run(  # noqa: S603 - an argument list, no shell
                        command, input=text.encode(), capture_output=True,
                        timeout=ESPEAK_TIMEOUT_S, check=False)
                except subprocess.TimeoutExpired as exc:
                    raise AgentError("upstream_timeout", "espeak-ng did not finish in time.",
                                     retryable=True) from exc
                if done.returncode == 0:
                    with open(out, "rb") as audio:
                        return audio.read()
                log.info("espeak-ng refused a voice", extra={
                    "voice": voice, "detail": done.stderr.decode(errors="replace")[:200]})
        raise AgentError("upstream_unavailable", "espeak-ng could not speak the narration.",
                         retryable=False)
