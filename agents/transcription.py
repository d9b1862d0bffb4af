"""Transcription agent: a voice note's audio in, its text out (Gemini, audio inline)."""

from __future__ import annotations

from google.genai import types

from agents import gemini
from agents.config import AgentSettings
from agents.errors import AgentError
from agents.models import availability
from agents.prompts import TRANSCRIPTION_INSTRUCTION, TRANSCRIPTION_PROMPT_VERSION
from agents.types import TranscriptionResult

# Inline requests are capped at 20 MB after base64 (which adds a third); keep a margin.
MAX_INLINE_AUDIO_BYTES = 14 * 1024 * 1024


def normalize_mime_type(mime_type: str) -> str:
    """``audio/webm;codecs=opus`` -> ``audio/webm``; lower-case, parameters dropped."""
    return mime_type.split(";", 1)[0].strip().lower()


def check_audio(audio: bytes, mime_type: str) -> str:
    """Validate an audio upload and return its normalized MIME type."""
    if not audio:
        raise AgentError("invalid_input", "The audio is empty.", retryable=False)
    if len(audio) > MAX_INLINE_AUDIO_BYTES:
        raise AgentError(
            "invalid_input",
            f"The audio is too large to transcribe (limit {MAX_INLINE_AUDIO_BYTES // 2**20} MB).",
            retryable=False,
        )
    normalized = normalize_mime_type(mime_type)
    major, _, minor = normalized.partition("/")
    # Browsers' MediaRecorder sometimes labels audio-only recordings video/webm.
    if major not in ("audio", "video") or not minor:
        raise AgentError(
            "invalid_input", f"Unsupported audio type {normalized or '(none)'!r}.", retryable=False
        )
    return normalized


class GeminiTranscriber:
    """Transcribes audio with the transcription route's model (``GEMINI_MODEL_TRANSCRIPTION``)."""

    prompt_version = TRANSCRIPTION_PROMPT_VERSION

    def __init__(self, settings: AgentSettings) -> None:
        self._settings = settings

    @property
    def model(self) -> str:
        """The model the next call goes to: the route's first one not known to be retired."""
        return availability.active(self._settings.transcription, self._settings.model_recheck_s)

    def transcribe(self, audio: bytes, mime_type: str) -> TranscriptionResult:
        """Transcribe one voice note; raises ``AgentError`` on any failure."""
        normalized = check_audio(audio, mime_type)
        response, model = gemini.generate_routed(
            self._settings,
            route=self._settings.transcription,
            contents=types.Content(
                role="user",
                parts=[
                    types.Part.from_bytes(data=audio, mime_type=normalized),
                    types.Part.from_text(text=TRANSCRIPTION_INSTRUCTION),
                ],
            ),
            config=types.GenerateContentConfig(),
            timeout_ms=self._settings.transcription_timeout_ms,
        )
        text = gemini.response_text(response).strip()
        if not text:
            raise AgentError(
                "invalid_model_output", "The transcription came back empty.", retryable=True
            )
        return TranscriptionResult(text=text, usage=gemini.usage_of(response, model))
