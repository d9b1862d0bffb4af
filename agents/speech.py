"""Narration agent: a text and a voice style in, spoken audio (WAV) out, from a Gemini TTS model
through ``generate_content`` with audio output and a prebuilt voice."""

from __future__ import annotations

import io
import math
import re
import wave

from google.genai import types

from agents import gemini
from agents.config import AgentSettings
from agents.errors import AgentError
from agents.models import availability
from agents.prompts import SPEECH_PROMPT_VERSION, SPEECH_VOICES, speech_prompt
from agents.types import MAX_NARRATION_CHARS, SpeechResult

WAV_MIME_TYPE = "audio/wav"
# Gemini's TTS answer: raw 16-bit PCM, mono, 24 kHz, as ``audio/L16;codec=pcm;rate=24000``. The
# samples are little-endian (Google's own examples write them to a WAV file unchanged), though
# RFC 2586's audio/L16 is big-endian.
DEFAULT_PCM_RATE = 24_000
# Google bills (and counts) generated speech at 25 audio tokens a second.
AUDIO_TOKENS_PER_SECOND = 25
# A narrator speaks about 15 characters a second (150 words a minute): how long a text will
# sound, before it is spoken (the offline narrator's silence, rate-limit estimates).
CHARS_PER_SECOND = 15.0
# A BCP 47 language tag: ``en``, ``pt-BR``, ``zh-Hant-TW``.
LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8}){0,3}$")


def check_speech_input(text: str, voice_style: str, language: str | None) -> str:
    """Validate a narration request; return the text stripped."""
    spoken = text.strip()
    if not spoken:
        raise AgentError("invalid_input", "The narration text is empty.", retryable=False)
    if len(spoken) > MAX_NARRATION_CHARS:
        raise AgentError(
            "invalid_input",
            f"The narration text is longer than {MAX_NARRATION_CHARS} characters.",
            retryable=False,
        )
    if voice_style not in SPEECH_VOICES:
        raise AgentError("invalid_input", f"Unknown voice style {voice_style!r}.",
                         retryable=False)
    if language is not None and not LANGUAGE_TAG.match(language):
        raise AgentError("invalid_input", f"{language!r} is not a BCP 47 language tag.",
                         retryable=False)
    return spoken


def spoken_seconds(text: str) -> float:
    """How long a text takes to say at a narrator's pace."""
    return len(text.strip()) / CHARS_PER_SECOND


def estimated_tokens(text: str) -> int:
    """Tokens one narration will cost, before it is made: the prompt (about 4 characters a
    token, plus the notes) and the audio it becomes."""
    audio_tokens = math.ceil(spoken_seconds(text) * AUDIO_TOKENS_PER_SECOND)
    return len(text) // 4 + 150 + audio_tokens


def wav_bytes(pcm: bytes, rate: int, channels: int = 1) -> bytes:
    """16-bit little-endian PCM wrapped in a WAV container."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)
    return buffer.getvalue()


def wav_duration(data: bytes) -> float:
    """Seconds of audio in a WAV file; ``invalid_model_output`` if it is not one."""
    try:
        with wave.open(io.BytesIO(data), "rb") as audio:
            return audio.getnframes() / audio.getframerate()
    except (wave.Error, EOFError, ZeroDivisionError) as exc:
        raise AgentError("invalid_model_output", "The generated speech is not a WAV file.",
                         retryable=True) from exc


def _mime_parameters(mime_type: str) -> tuple[str, dict[str, str]]:
    kind, *params = (piece.strip() for piece in mime_type.split(";"))
    pairs = (param.partition("=") for param in params)
    return kind.lower(), {key.strip().lower(): value.strip() for key, _, value in pairs}


def as_wav(data: bytes, mime_type: str) -> bytes:
    """The model's audio as a WAV file: raw PCM (``audio/L16``/``audio/pcm``, its rate and
    channels read from the MIME type) is wrapped; a WAV is kept as it is."""
    kind, params = _mime_parameters(mime_type)
    if kind in ("audio/wav", "audio/x-wav", "audio/wave"):
        wav_duration(data)  # raises if it is not one
        return data
    if kind not in ("audio/l16", "audio/pcm"):
        raise AgentError("invalid_model_output",
                         f"The generated speech has an unexpected type {kind!r}.", retryable=True)
    try:
        rate = int(params.get("rate", DEFAULT_PCM_RATE))
        channels = int(params.get("channels", 1))
    except ValueError as exc:
        raise AgentError("invalid_model_output", "The generated speech's format is unreadable.",
                         retryable=True) from exc
    frame = 2 * channels
    pcm = data[: len(data) - len(data) % frame]  # a torn last frame is dropped
    if not pcm or not 8_000 <= rate <= 96_000 or not 1 <= channels <= 2:
        raise AgentError("invalid_model_output", "The generated speech is empty or malformed.",
                         retryable=True)
    return wav_bytes(pcm, rate, channels)


def first_audio(response: types.GenerateContentResponse) -> tuple[bytes, str]:
    """The first inline audio of the first candidate, with its MIME type."""
    candidates = response.candidates or []
    content = candidates[0].content if candidates else None
    for part in (content.parts if content else None) or []:
        blob = part.inline_data
        if blob and blob.data and (blob.mime_type or "").lower().startswith("audio/"):
            return blob.data, str(blob.mime_type)
    raise AgentError("invalid_model_output", "The AI provider returned no audio.",
                     retryable=True)


def speech_config(voice_style: str, language: str | None) -> types.GenerateContentConfig:
    """Audio output, spoken by the style's prebuilt voice (in ``language`` when given)."""
    voice = types.VoiceConfig(
        prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name=SPEECH_VOICES[voice_style]))
    return types.GenerateContentConfig(
        response_modalities=["AUDIO"],
        speech_config=types.SpeechConfig(voice_config=voice, language_code=language),
    )


class GeminiNarrator:
    """Speaks narrations with the Gemini TTS model."""

    prompt_version = SPEECH_PROMPT_VERSION

    def __init__(self, settings: AgentSettings) -> None:
        self._settings = settings

    @property
    def model(self) -> str:
        """The model the next call goes to: the route's first one not known to be retired."""
        return availability.active(self._settings.tts, self._settings.model_recheck_s)

    def narrate(self, text: str, voice_style: str, language: str | None = None) -> SpeechResult:
        """Speak ``text`` in a voice style; raises ``AgentError`` on any failure."""
        spoken = check_speech_input(text, voice_style, language)
        response, model = gemini.generate_routed(
            self._settings,
            route=self._settings.tts,
            contents=speech_prompt(spoken, voice_style, language),
            config=speech_config(voice_style, language),
            timeout_ms=self._settings.tts_timeout_ms,
        )
        data = as_wav(*first_audio(response))
        return SpeechResult(data=data, mime_type=WAV_MIME_TYPE,
                            duration_seconds=wav_duration(data),
                            usage=gemini.usage_of(response, model))
