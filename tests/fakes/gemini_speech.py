"""The fake Gemini's speech (TTS) answers, as Google's TTS models give them.

A request with ``generationConfig.responseModalities: ["AUDIO"]`` (and a ``speechConfig``) is
the ``speech`` kind. Its answer is ``candidates[0].content.parts[0].inlineData`` holding raw
16-bit little-endian PCM, mono, 24 kHz, ``mimeType`` ``audio/L16;codec=pcm;rate=24000``:
a voiced-like waveform (a buzzing fundamental with harmonics, shaped into syllables, silent
between words), as long as the spoken text takes at ``CHARS_PER_SECOND``, so a film's timing
is realistic. ``usageMetadata`` counts the audio at ``AUDIO_TOKENS_PER_SECOND`` in
``candidatesTokensDetails`` (modality ``AUDIO``), as Google bills it.

The spoken text is what follows the prompt's ``#### TRANSCRIPT`` heading (Google's TTS prompt
layout, ``agents.prompts.SPEECH_TRANSCRIPT_HEADING``), else the whole prompt. A TTS model asked
for any other output, or another model asked for audio, answers Google's 400.
"""

from __future__ import annotations

import base64
import math
import re
from array import array
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

SAMPLE_RATE = 24_000
MIME_TYPE = f"audio/L16;codec=pcm;rate={SAMPLE_RATE}"
CHARS_PER_SECOND = 15.0
AUDIO_TOKENS_PER_SECOND = 25
MIN_SECONDS = 0.2
# Must match agents.prompts.SPEECH_TRANSCRIPT_HEADING on a line of its own.
TRANSCRIPT = re.compile(r"^#### TRANSCRIPT[ \t]*\n", re.MULTILINE)
_SAMPLES_PER_CHAR = round(SAMPLE_RATE / CHARS_PER_SECOND)


def camel_keys(value: Any) -> Any:
    """``value`` with every mapping key in camelCase: like any proto3 JSON endpoint the API
    takes both spellings, and google-genai sends nested configs in snake_case."""
    if isinstance(value, Mapping):
        return {re.sub(r"_([a-z])", lambda m: m.group(1).upper(), str(k)): camel_keys(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [camel_keys(v) for v in value]
    return value


def is_speech_model(model: str) -> bool:
    return "-tts" in model


def modalities(generation_config: Mapping[str, Any]) -> list[str]:
    asked = generation_config.get("responseModalities",
                                  generation_config.get("response_modalities")) or []
    return [str(m).upper() for m in asked]


def modality_error(model: str, generation_config: Mapping[str, Any]) -> str | None:
    """Google's 400 message when the model cannot answer the modalities asked, else None."""
    asked = modalities(generation_config)
    if is_speech_model(model):
        if asked == ["AUDIO"]:
            return None
        accepts = "* AUDIO\n"
    elif "AUDIO" in asked:
        accepts = "* TEXT\n"
    else:
        return None
    shown = f" ({', '.join(asked)})" if asked else ""
    return (f"The requested combination of response modalities{shown} is not supported by the "
            f"model. models/{model} accepts the following combination of response "
            f"modalities:\n{accepts}")


def voice_name(generation_config: Mapping[str, Any]) -> str | None:
    """The prebuilt voice a request asks for (None: none named)."""
    speech = camel_keys(generation_config.get("speechConfig",
                                              generation_config.get("speech_config")) or {})
    prebuilt = (speech.get("voiceConfig") or {}).get("prebuiltVoiceConfig") or {}
    name = prebuilt.get("voiceName")
    return str(name) if name else None


def spoken_text(prompt: str) -> str:
    """The words a TTS model would speak from this prompt."""
    match = TRANSCRIPT.search(prompt)
    return (prompt[match.end():] if match else prompt).strip()


def spoken_seconds(text: str) -> float:
    return max(MIN_SECONDS, len(text) / CHARS_PER_SECOND)


@lru_cache(maxsize=1)
def _voiced_second() -> bytes:
    """One second of voiced-like sound: a 140 Hz fundamental with falling harmonics, its
    loudness rising and falling five times (syllables). Computed once."""
    samples = array("h")
    for i in range(SAMPLE_RATE):
        t = i / SAMPLE_RATE
        buzz = sum(math.sin(2 * math.pi * 140 * k * t) / k for k in range(1, 6))
        syllable = 0.35 + 0.65 * abs(math.sin(math.pi * 5 * t))
        samples.append(int(6000 * syllable * buzz))
    return samples.tobytes()  # native order: little-endian on every machine this runs on


def speech_pcm(text: str) -> bytes:
    """PCM of ``text`` spoken: each character lasts 1/15 s, voiced in words and silent for
    spaces and punctuation (never silent overall)."""
    voiced = _voiced_second()
    step = 2 * _SAMPLES_PER_CHAR
    chunks: list[bytes] = []
    offset = 0
    for char in text or " ":
        if char.isalnum():
            if offset + step > len(voiced):
                offset = 0
            chunks.append(voiced[offset:offset + step])
            offset += step
        else:
            chunks.append(bytes(step))
    pcm = b"".join(chunks)
    minimum = 2 * round(MIN_SECONDS * SAMPLE_RATE)
    if len(pcm) < minimum:
        pcm += voiced[: minimum - len(pcm)]
    return pcm


def audio_part(prompt: str) -> dict[str, Any]:
    """The answer's part: the transcript of ``prompt`` spoken, as inline PCM."""
    pcm = speech_pcm(spoken_text(prompt))
    return {"inlineData": {"mimeType": MIME_TYPE, "data": base64.b64encode(pcm).decode("ascii")}}


def audio_seconds(part: Mapping[str, Any]) -> float:
    """How long an inline PCM part plays."""
    inline = part.get("inlineData") or {}
    return len(base64.b64decode(inline.get("data", ""))) / 2 / SAMPLE_RATE


def usage(prompt_tokens: int, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """``usageMetadata`` of a speech answer: audio at 25 tokens a second, any text at ~4
    characters a token, each modality detailed as Google does."""
    audio = sum(math.ceil(audio_seconds(p) * AUDIO_TOKENS_PER_SECOND)
                for p in parts if "inlineData" in p)
    text = sum(max(1, len(p.get("text", "")) // 4) for p in parts if "text" in p)
    details = [{"modality": m, "tokenCount": n}
               for m, n in (("AUDIO", audio), ("TEXT", text)) if n]
    return {
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": audio + text,
        "totalTokenCount": prompt_tokens + audio + text,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
        "candidatesTokensDetails": details,
    }
