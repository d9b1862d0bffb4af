"""The narration agent through the real google-genai SDK against the fake Gemini's TTS answers,
the offline narrator (espeak-ng, or silence), and the fake's speech answers themselves."""

from __future__ import annotations

import io
import math
import time
import wave
from array import array

import pytest
from google.genai import types

from agents import gemini
from agents.config import AgentSettings
from agents.errors import AgentError
from agents.models import availability
from agents.offline import OfflineNarrator
from agents.prompts import SPEECH_STYLE_NOTES, SPEECH_TRANSCRIPT_HEADING, SPEECH_VOICES
from agents.provider import Narrator, build_provider
from agents.speech import GeminiNarrator, as_wav, wav_bytes
from agents.types import MAX_NARRATION_CHARS, VOICE_STYLES
from tests.audio import need_tool
from tests.conftest import FAKE_GEMINI_KEY
from tests.fakes import gemini_speech
from tests.fakes.gemini_server import FakeGemini

TEXT = ("The tram climbed the hill while the city woke up below us, "
        "and for a moment nobody said a word.")


@pytest.fixture
def settings() -> AgentSettings:
    return AgentSettings(gemini_api_key=FAKE_GEMINI_KEY)


def read_wav(data: bytes) -> tuple[int, int, array[int]]:
    """(rate, channels, 16-bit samples) of a WAV file."""
    with wave.open(io.BytesIO(data), "rb") as audio:
        assert audio.getsampwidth() == 2
        samples = array("h", audio.readframes(audio.getnframes()))
        return audio.getframerate(), audio.getnchannels(), samples


def rms(samples: array[int]) -> float:
    return math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))


# --- the Gemini narrator ------------------------------------------------------------------------


def test_narration_asks_for_audio_in_a_prebuilt_voice_and_returns_a_wav(
    fake_gemini: FakeGemini, settings: AgentSettings
) -> None:
    result = GeminiNarrator(settings).narrate(f"  {TEXT}\n", "warm", "en-GB")

    (request,) = fake_gemini.requests
    assert request.path == "/v1/models/gemini-3.8-flash-tts:generateContent"
    assert request.headers["x-server-timeout"] == "60"  # GEMINI_TIMEOUT_TTS_MS, in seconds
    config = request.generation_config
    assert config["responseModalities"] == ["AUDIO"]
    assert gemini_speech.voice_name(config) == "Sulafat"
    assert gemini_speech.camel_keys(config["speechConfig"])["languageCode"] == "en-GB"
    assert request.thinking == {}  # a TTS model takes no thinking config
    # Director's notes, then the words under the transcript heading: only they are spoken.
    assert SPEECH_STYLE_NOTES["warm"] in request.prompt_text
    assert "en-GB" in request.prompt_text
    assert request.prompt_text.endswith(f"{SPEECH_TRANSCRIPT_HEADING}\n{TEXT}")
    assert gemini_speech.spoken_text(request.prompt_text) == TEXT

    assert result.mime_type == "audio/wav"
    rate, channels, samples = read_wav(result.data)
    assert (rate, channels) == (24_000, 1)
    expected_s = len(TEXT) / gemini_speech.CHARS_PER_SECOND  # the fake's pace
    assert result.duration_seconds == pytest.approx(expected_s, abs=0.001)
    assert len(samples) == round(expected_s * rate)
    assert rms(samples) > 1000  # real sound, not silence
    assert result.usage.model == "gemini-3.8-flash-tts"
    assert result.usage.output_tokens == math.ceil(result.duration_seconds * 25)
    assert request.usage is not None
    assert result.usage.input_tokens == request.usage["promptTokenCount"]
    assert request.usage["candidatesTokensDetails"] == [
        {"modality": "AUDIO", "tokenCount": result.usage.output_tokens}]


@pytest.mark.parametrize("style", VOICE_STYLES)
def test_each_voice_style_is_a_voice_and_its_notes(
    fake_gemini: FakeGemini, settings: AgentSettings, style: str
) -> None:
    GeminiNarrator(settings).narrate(TEXT, style)

    (request,) = fake_gemini.requests
    assert gemini_speech.voice_name(request.generation_config) == SPEECH_VOICES[style]
    assert SPEECH_STYLE_NOTES[style] in request.prompt_text
    assert "languageCode" not in gemini_speech.camel_keys(
        request.generation_config["speechConfig"])
    assert "Language:" not in request.prompt_text


def test_every_style_has_its_own_voice() -> None:
    assert set(SPEECH_VOICES) == set(SPEECH_STYLE_NOTES) == set(VOICE_STYLES)
    assert len(set(SPEECH_VOICES.values())) == len(VOICE_STYLES)


def test_the_audio_lasts_as_long_as_the_text_takes_to_say(
    fake_gemini: FakeGemini, settings: AgentSettings
) -> None:
    narrator = GeminiNarrator(settings)
    short = narrator.narrate("Hello.", "calm")
    long = narrator.narrate(" ".join([TEXT] * 3), "calm")

    assert short.duration_seconds == pytest.approx(0.4, abs=0.001)
    assert long.duration_seconds == pytest.approx((3 * len(TEXT) + 2) / 15, abs=0.001)
    assert long.usage.output_tokens > 7 * short.usage.output_tokens


@pytest.mark.parametrize(("text", "style", "language", "fragment"), [
    ("", "warm", None, "empty"),
    ("  \n\t ", "warm", None, "empty"),
    ("x" * (MAX_NARRATION_CHARS + 1), "warm", None, f"{MAX_NARRATION_CHARS} characters"),
    (TEXT, "shouty", None, "voice style"),
    (TEXT, "warm", "english please", "BCP 47"),
    (TEXT, "warm", "e", "BCP 47"),
])
def test_invalid_input_fails_before_any_call(
    fake_gemini: FakeGemini, settings: AgentSettings, text: str, style: str,
    language: str | None, fragment: str,
) -> None:
    for narrator in (GeminiNarrator(settings), OfflineNarrator(find_espeak=False)):
        with pytest.raises(AgentError) as info:
            narrator.narrate(text, style, language)
        assert (info.value.code, info.value.retryable) == ("invalid_input", False)
        assert fragment in info.value.message
    assert fake_gemini.request_count == 0


def test_the_longest_text_allowed_is_spoken(
    fake_gemini: FakeGemini, settings: AgentSettings
) -> None:
    words = ("memory " * MAX_NARRATION_CHARS)[:MAX_NARRATION_CHARS]
    result = GeminiNarrator(settings).narrate(words, "storyteller")
    assert result.duration_seconds == pytest.approx(len(words.strip()) / 15, abs=0.001)


def test_a_hang_longer_than_the_timeout_fails_fast(fake_gemini: FakeGemini) -> None:
    fake_gemini.hang_next("speech", seconds=10)
    started = time.monotonic()

    with pytest.raises(AgentError) as info:
        GeminiNarrator(AgentSettings(gemini_api_key=FAKE_GEMINI_KEY, tts_timeout_ms=500)
                       ).narrate(TEXT, "warm")

    assert time.monotonic() - started < 5
    assert (info.value.code, info.value.retryable) == ("upstream_timeout", True)


def test_speech_latency_is_set_per_kind(fake_gemini: FakeGemini, settings: AgentSettings) -> None:
    fake_gemini.set_latency(0.4, "speech")
    started = time.monotonic()
    GeminiNarrator(settings).narrate(TEXT, "warm")
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    gemini.generate(settings, model="gemini-3.8-flash", contents="hi", timeout_ms=5_000,
                    config=types.GenerateContentConfig())
    assert time.monotonic() - started < 0.4


@pytest.mark.parametrize(("script", "code", "retryable"), [
    (lambda f: f.fail_next("speech", status=429, retry_delay="3s"), "upstream_rate_limited",
     True),
    (lambda f: f.fail_next("speech", status=503), "upstream_unavailable", True),
    (lambda f: f.fail_next("speech", status=400), "upstream_bad_request", False),
    (lambda f: f.quota_day_next("speech"), "upstream_quota_exhausted", False),
    (lambda f: f.malformed_next("speech"), "upstream_unavailable", True),
    (lambda f: f.drop_next("speech"), "upstream_unavailable", True),
    (lambda f: f.block_next("speech"), "blocked", False),
    (lambda f: f.block_next("speech", on="candidate"), "blocked", False),
    # A model that answers words instead of audio.
    (lambda f: f.reply_next("speech", "I cannot read that aloud."), "invalid_model_output",
     True),
])
def test_upstream_failures_become_clear_codes(
    fake_gemini: FakeGemini, settings: AgentSettings, script: object, code: str,
    retryable: bool,
) -> None:
    script(fake_gemini)  # type: ignore[operator]

    with pytest.raises(AgentError) as info:
        GeminiNarrator(settings).narrate(TEXT, "serious")

    assert (info.value.code, info.value.retryable) == (code, retryable)
    assert fake_gemini.requests_of("speech")  # the fault was served to a speech call
    GeminiNarrator(settings).narrate(TEXT, "serious")  # one fault, then a normal answer


def test_a_retired_tts_model_falls_back_and_is_remembered(
    fake_gemini: FakeGemini, settings: AgentSettings
) -> None:
    fake_gemini.models.retire(["gemini-3.8-flash-tts"])
    narrator = GeminiNarrator(settings)
    assert narrator.model == "gemini-3.8-flash-tts"

    answered = [narrator.narrate(TEXT, "calm").usage.model for _ in range(3)]

    assert answered == ["gemini-3.8-flash-lite-tts"] * 3
    assert [r.model for r in fake_gemini.requests].count("gemini-3.8-flash-tts") == 1
    assert narrator.model == "gemini-3.8-flash-lite-tts"  # what cache keys and limits use now


def test_no_working_tts_model_is_model_unavailable(fake_gemini: FakeGemini) -> None:
    settings = AgentSettings.from_env({"GEMINI_API_KEY": FAKE_GEMINI_KEY,
                                       "GEMINI_MODEL_TTS": "gemini-2.5-flash-preview-tts",
                                       "GEMINI_FALLBACK_MODELS_TTS": "none"})
    with pytest.raises(AgentError) as info:
        GeminiNarrator(settings).narrate(TEXT, "warm")

    assert (info.value.code, info.value.retryable) == ("model_unavailable", False)
    assert "gemini-2.5-flash-preview-tts" in info.value.message
    assert "GEMINI_MODEL_TTS" in info.value.message
    assert availability.is_unavailable("gemini-2.5-flash-preview-tts", 600)


def test_a_tts_model_asked_for_text_gets_googles_400(
    fake_gemini: FakeGemini, settings: AgentSettings
) -> None:
    with pytest.raises(AgentError) as info:
        gemini.generate(settings, model="gemini-3.8-flash-tts", contents="Say hi",
                        timeout_ms=5_000,
                        config=types.GenerateContentConfig(response_modalities=["TEXT"]))
    assert (info.value.code, info.value.upstream_status) == ("upstream_bad_request", 400)
    assert info.value.detail and "accepts the following combination of response modalities" \
        in info.value.detail
    # Nor does a text model speak.
    with pytest.raises(AgentError) as info:
        gemini.generate(settings, model="gemini-3.8-flash", contents="Say hi", timeout_ms=5_000,
                        config=types.GenerateContentConfig(response_modalities=["AUDIO"]))
    assert (info.value.code, info.value.upstream_status) == ("upstream_bad_request", 400)
    assert [r.status for r in fake_gemini.requests] == [400, 400]


# --- the model's audio as a WAV -----------------------------------------------------------------


def test_pcm_is_wrapped_at_the_rate_its_mime_type_names() -> None:
    pcm = array("h", [1000, -1000] * 8000).tobytes()
    rate, channels, samples = read_wav(as_wav(pcm + b"\x01", "audio/L16;codec=pcm;rate=16000"))
    assert (rate, channels, len(samples)) == (16_000, 1, 16_000)  # the torn byte dropped
    rate, channels, _ = read_wav(as_wav(pcm, "audio/pcm"))
    assert (rate, channels) == (24_000, 1)  # Gemini's rate when none is named
    wav = wav_bytes(pcm, 22_050)
    assert as_wav(wav, "audio/wav") == wav


@pytest.mark.parametrize(("data", "mime_type"), [
    (b"", "audio/L16;codec=pcm;rate=24000"),
    (b"\x00\x01" * 100, "audio/L16;rate=fast"),
    (b"\x00\x01" * 100, "audio/L16;rate=1"),
    (b"ID3 not a wav", "audio/wav"),
    (b"\x00\x01" * 100, "audio/mpeg"),
])
def test_unusable_audio_is_invalid_model_output(data: bytes, mime_type: str) -> None:
    with pytest.raises(AgentError) as info:
        as_wav(data, mime_type)
    assert (info.value.code, info.value.retryable) == ("invalid_model_output", True)


# --- the offline narrator -----------------------------------------------------------------------


def test_both_narrators_satisfy_the_interface(settings: AgentSettings) -> None:
    assert isinstance(GeminiNarrator(settings), Narrator)
    assert isinstance(OfflineNarrator(), Narrator)
    assert isinstance(build_provider(settings).narrator, GeminiNarrator)
    assert isinstance(build_provider(AgentSettings()).narrator, OfflineNarrator)


def test_offline_narration_speaks_with_espeak_ng() -> None:
    narrator = OfflineNarrator(need_tool("espeak-ng"))

    warm = narrator.narrate(TEXT, "warm")
    again = narrator.narrate(TEXT, "warm")
    serious = narrator.narrate(TEXT, "serious")

    assert warm.mime_type == "audio/wav" and warm.data == again.data  # deterministic
    rate, channels, samples = read_wav(warm.data)
    assert channels == 1 and rate > 8000
    assert rms(samples) > 500  # spoken, not silent
    assert warm.duration_seconds == pytest.approx(len(samples) / rate)
    assert 3 < warm.duration_seconds < 15
    # The styles differ in speed: serious (150 words a minute) is slower than warm (155).
    assert serious.duration_seconds > warm.duration_seconds
    assert warm.usage.model == "offline" and warm.usage.output_tokens == 0
    assert narrator.prompt_version == "offline-speech-espeak-v1"


def test_offline_espeak_takes_the_language_and_any_text() -> None:
    narrator = OfflineNarrator(need_tool("espeak-ng"))
    french = narrator.narrate("Le tram monte la colline.", "calm", "fr-FR")  # -> fr
    unknown = narrator.narrate("The tram climbs the hill.", "calm", "xq-ZZ")  # espeak's own
    dashed = narrator.narrate("-v --help is what we typed", "calm")  # never an option
    for result in (french, unknown, dashed):
        assert rms(read_wav(result.data)[2]) > 500


def test_offline_narration_without_espeak_is_silence_as_long_as_the_text() -> None:
    narrator = OfflineNarrator(find_espeak=False)

    result = narrator.narrate(TEXT, "storyteller", "pt-BR")

    rate, channels, samples = read_wav(result.data)
    assert (rate, channels) == (24_000, 1)
    assert result.duration_seconds == pytest.approx(len(TEXT) / 15, abs=0.001)
    assert not any(samples)
    assert narrator.narrate(TEXT, "storyteller", "pt-BR").data == result.data
    assert narrator.narrate("Hi.", "calm").duration_seconds == 0.5  # never shorter
    assert narrator.prompt_version == "offline-speech-silent-v1"


# --- the fake's conventions ---------------------------------------------------------------------


def test_the_fake_finds_the_transcript_as_the_prompt_lays_it_out() -> None:
    assert gemini_speech.TRANSCRIPT.pattern.startswith(f"^{SPEECH_TRANSCRIPT_HEADING}")
    assert gemini_speech.spoken_text("Say cheerfully: have a nice day") == (
        "Say cheerfully: have a nice day")
    pcm = gemini_speech.speech_pcm("ab cd")
    assert len(pcm) == 2 * 5 * 1600  # five characters of 1/15 s
    assert not any(pcm[2 * 2 * 1600:2 * 3 * 1600])  # the space is silent
