"""The Gemini agents, through the real google-genai SDK, against a local fake Gemini server."""

from __future__ import annotations

import base64
import io
import json
import pickle
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from google.genai import errors as genai_errors
from google.genai import types
from PIL import Image

from agents import gemini
from agents.config import AgentSettings
from agents.errors import AgentError, from_sdk_error, parse_duration
from agents.illustration import GeminiIllustrator
from agents.prompts import (
    ILLUSTRATION_STYLE_TEMPLATES,
    MODE_INSTRUCTIONS,
    TONE_INSTRUCTIONS,
    TRANSCRIPTION_INSTRUCTION,
)
from agents.story_builder import GeminiStoryBuilder, build_story_context, parse_chapters
from agents.transcription import GeminiTranscriber
from agents.types import NoteInput, StorySettings
from tests.conftest import FAKE_GEMINI_KEY
from tests.fakes.gemini_server import NOTE_ID_LINE, FakeGemini

API_KEY = FAKE_GEMINI_KEY
DAY_MS = 86_400_000
T0 = 1_714_550_400_000  # 2024-05-01T08:00:00Z

NOTES = (
    NoteInput(id="n-2", timestamp_ms=T0 + 3_600_000, title="Tram 28",
              text_content="We rode the tram up the hill.", image_count=2),
    NoteInput(id="n-1", timestamp_ms=T0, title="Arrival",
              transcriptions=("We just landed in Lisbon!",)),
    NoteInput(id="n-3", timestamp_ms=T0 + DAY_MS, text_content="Pasteis de nata at Belem."),
)


@pytest.fixture
def fake(fake_gemini: FakeGemini) -> FakeGemini:
    return fake_gemini


@pytest.fixture
def settings() -> AgentSettings:
    return AgentSettings(gemini_api_key=API_KEY)


def short_timeouts() -> AgentSettings:
    return AgentSettings(
        gemini_api_key=API_KEY,
        transcription_timeout_ms=500,
        story_timeout_ms=500,
        illustration_timeout_ms=500,
    )


def call_agent(kind: str, settings: AgentSettings) -> object:
    if kind == "transcription":
        return GeminiTranscriber(settings).transcribe(b"RIFF-fake-audio", "audio/wav")
    if kind == "story":
        return GeminiStoryBuilder(settings).build(NOTES, "Lisbon", StorySettings())
    return GeminiIllustrator(settings).illustrate("A tram on a hill", "illustration")


# --- happy paths: results and what Gemini received ------------------------------------------


def test_transcription_sends_inline_audio_and_returns_text(
    fake: FakeGemini, settings: AgentSettings
) -> None:
    audio = b"\x1aE\xdf\xa3 fake webm bytes"

    result = GeminiTranscriber(settings).transcribe(audio, "audio/webm;codecs=opus")

    assert result.text == "Hello from the fake Gemini"
    (request,) = fake.requests
    assert request.path == "/v1/models/gemini-3.5-flash-lite:generateContent"
    assert request.api_version == "v1"
    assert request.headers["x-goog-api-key"] == API_KEY
    assert request.headers["x-server-timeout"] == "30"  # the 30 000 ms transcription timeout
    (inline,) = request.inline_data
    assert inline.get("mimeType", inline.get("mime_type")) == "audio/webm"
    assert base64.b64decode(inline["data"]) == audio
    assert TRANSCRIPTION_INSTRUCTION in request.prompt_text
    assert request.usage is not None
    assert result.usage.model == "gemini-3.5-flash-lite"
    assert request.thinking == {"thinkingLevel": "MINIMAL"}
    assert result.usage.input_tokens == request.usage["promptTokenCount"]
    assert result.usage.output_tokens == request.usage["candidatesTokenCount"]


def test_story_sends_context_schema_thinking_and_creativity(
    fake: FakeGemini, settings: AgentSettings
) -> None:
    story_settings = StorySettings(narrative_tone="poetic", story_mode="chapter", creativity=1.2)

    result = GeminiStoryBuilder(settings).build(NOTES, "Lisbon trip", story_settings)

    assert [c.source_note_id for c in result.chapters] == ["n-1", "n-2", "n-3"]
    assert all(c.title and c.content and c.illustration_prompt for c in result.chapters)
    (request,) = fake.requests
    assert request.path == "/v1/models/gemini-3.8-flash:streamGenerateContent"
    assert request.query == {"alt": ["sse"]}
    assert request.headers["x-server-timeout"] == "60"
    config = request.generation_config
    # Gemini 3.x: a thinking level, no temperature; creativity 1.2 is said in the prompt.
    assert "temperature" not in config
    assert request.thinking == {"thinkingLevel": "LOW"}
    assert "Creativity: expressive" in request.system_instruction
    assert config["responseMimeType"] == "application/json"
    schema = config["responseSchema"]
    assert schema["type"] == "ARRAY"
    assert set(schema["items"]["properties"]) == {
        "title", "content", "illustrationPrompt", "sourceNoteId",
    }
    assert "sourceNoteId" in schema["items"]["required"]
    assert TONE_INSTRUCTIONS["poetic"] in request.system_instruction
    assert MODE_INSTRUCTIONS["chapter"] in request.system_instruction
    prompt = request.prompt_text
    assert "Space: Lisbon trip" in prompt
    assert "We just landed in Lisbon!" in prompt and "photos: 2" in prompt
    assert prompt.index("id: n-1") < prompt.index("id: n-2") < prompt.index("id: n-3")
    assert "Day 2 - Thursday 2024-05-02" in prompt
    assert request.usage is not None
    assert result.usage.input_tokens == request.usage["promptTokenCount"]


@pytest.mark.parametrize(("creativity", "temperature", "words"), [
    (0.0, 0.0, "literal"), (0.7, 0.525, "restrained"), (1.0, 0.75, "expressive"),
    (2.0, 1.5, "free"),
])
def test_story_creativity_is_in_the_prompt_and_a_temperature_only_for_2x(
    fake: FakeGemini, creativity: float, temperature: float, words: str
) -> None:
    fake.models.revive(["gemini-2.5-flash"])  # a deployment still on a 2.x model
    old = AgentSettings.from_env(
        {"GEMINI_API_KEY": API_KEY, "GEMINI_MODEL_STORY": "gemini-2.5-flash"})
    story = StorySettings(creativity=creativity)

    GeminiStoryBuilder(old).build(NOTES, "Lisbon", story)
    GeminiStoryBuilder(AgentSettings(gemini_api_key=API_KEY)).build(NOTES, "Lisbon", story)

    on_2x, on_3x = fake.requests
    assert on_2x.generation_config["temperature"] == pytest.approx(temperature)
    assert on_2x.thinking == {"thinkingBudget": 1024}  # "low", as a 2.x budget
    assert "temperature" not in on_3x.generation_config
    assert on_3x.thinking == {"thinkingLevel": "LOW"}
    for request in (on_2x, on_3x):
        assert f"Creativity: {words}." in request.system_instruction


def test_clean_mode_keeps_known_ids_and_drops_unknown_ones(
    fake: FakeGemini, settings: AgentSettings
) -> None:
    fake.reply_next("story", json.dumps([
        {"title": "Day one", "content": "Arrival and tram.", "illustrationPrompt": "A tram",
         "sourceNoteId": "n-1"},
        {"title": "Day two", "content": "Pastries.", "illustrationPrompt": "Pastries",
         "sourceNoteId": "made-up"},
    ]))

    result = GeminiStoryBuilder(settings).build(NOTES, "Lisbon", StorySettings(story_mode="clean"))

    assert [c.source_note_id for c in result.chapters] == ["n-1", None]
    schema = fake.requests[0].generation_config["responseSchema"]
    assert "sourceNoteId" not in schema["items"]["required"]


def test_illustration_asks_for_a_4_3_image_and_decodes_it(
    fake: FakeGemini, settings: AgentSettings
) -> None:
    result = GeminiIllustrator(settings).illustrate("A yellow tram climbing a hill", "pastel")

    assert result.mime_type == "image/png"
    assert result.width * 3 == result.height * 4
    with Image.open(io.BytesIO(result.data)) as image:
        assert image.format == "PNG" and image.size == (result.width, result.height)
    (request,) = fake.requests
    assert request.path == "/v1/models/gemini-nano-banana-2.1:generateContent"
    assert request.headers["x-server-timeout"] == "45"
    assert request.generation_config["responseModalities"] == ["IMAGE"]
    assert request.generation_config["imageConfig"] == {"aspectRatio": "4:3"}
    assert "A yellow tram climbing a hill" in request.prompt_text
    assert ILLUSTRATION_STYLE_TEMPLATES["pastel"].split("Scene:")[0].strip() in request.prompt_text
    assert result.usage.model == "gemini-nano-banana-2.1" and result.usage.output_tokens > 0
    assert request.thinking == {}  # the model's own default


def test_models_and_timeouts_come_from_the_environment(fake: FakeGemini) -> None:
    settings = AgentSettings.from_env({
        "GEMINI_API_KEY": API_KEY,
        "GEMINI_MODEL_FLASH": "gemini-3.6-flash",  # the text agents' former shared setting
        "GEMINI_TIMEOUT_TRANSCRIPTION_MS": "12000",
    })

    GeminiTranscriber(settings).transcribe(b"abc", "audio/ogg")

    assert fake.requests[0].path == "/v1/models/gemini-3.6-flash:generateContent"
    assert fake.requests[0].headers["x-server-timeout"] == "12"


def test_stream_helper_reads_server_sent_events(fake: FakeGemini, settings: AgentSettings) -> None:
    chunks = list(gemini.generate_stream(
        settings, model="gemini-3.8-flash", contents="Say hello",
        config=types.GenerateContentConfig(), timeout_ms=5_000,
    ))

    assert len(chunks) == 2
    assert "".join(gemini.response_text(c) for c in chunks) == fake.text_reply
    (request,) = fake.requests
    assert request.path == "/v1/models/gemini-3.8-flash:streamGenerateContent"
    assert request.query == {"alt": ["sse"]}


# --- the client ------------------------------------------------------------------------------


def test_one_client_per_process_shared_by_threads(
    fake: FakeGemini, settings: AgentSettings
) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        seen = list(pool.map(lambda _: gemini.get_client(settings), range(8)))

    assert len({id(client) for client in seen}) == 1
    gemini.reset_clients()
    assert gemini.get_client(settings) is not seen[0]


def test_concurrent_calls_share_the_client(fake: FakeGemini, settings: AgentSettings) -> None:
    transcriber = GeminiTranscriber(settings)
    fake.set_latency(0.05)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(
            lambda n: transcriber.transcribe(bytes([n]), "audio/wav"), range(20)
        ))
    elapsed = time.monotonic() - started

    assert [r.text for r in results] == ["Hello from the fake Gemini"] * 20
    assert len(fake.requests_of("transcription")) == 20
    assert elapsed < 20 * 0.05  # the calls overlapped instead of queuing behind one another


def test_missing_key_is_an_auth_error_without_any_request(fake: FakeGemini) -> None:
    with pytest.raises(AgentError) as info:
        GeminiTranscriber(AgentSettings(gemini_api_key=None)).transcribe(b"a", "audio/wav")

    assert info.value.code == "upstream_auth" and not info.value.retryable
    assert fake.requests == []


# --- faults ----------------------------------------------------------------------------------


def test_rate_limit_is_retryable_with_the_server_delay(
    fake: FakeGemini, settings: AgentSettings
) -> None:
    fake.fail_next("transcription", status=429, retry_delay="2s")

    with pytest.raises(AgentError) as info:
        call_agent("transcription", settings)

    error = info.value
    assert (error.code, error.retryable, error.retry_after) == ("upstream_rate_limited", True, 2.0)
    assert error.upstream_status == 429
    assert len(fake.requests) == 1  # no stacked SDK retries: Celery owns them


def test_daily_quota_is_not_retryable(fake: FakeGemini, settings: AgentSettings) -> None:
    fake.quota_day_next("story")

    with pytest.raises(AgentError) as info:
        call_agent("story", settings)

    assert info.value.code == "upstream_quota_exhausted"
    assert info.value.retryable is False


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (500, "upstream_unavailable", True),
        (503, "upstream_unavailable", True),
        (408, "upstream_timeout", True),
        (400, "upstream_bad_request", False),
        (404, "model_unavailable", False),  # generateContent 404s name only the model
        (401, "upstream_auth", False),
        (403, "upstream_auth", False),
    ],
)
def test_http_errors_map_to_codes(
    fake: FakeGemini, settings: AgentSettings, status: int, code: str, retryable: bool
) -> None:
    fake.fail_next("illustration", status=status)

    with pytest.raises(AgentError) as info:
        call_agent("illustration", settings)

    assert (info.value.code, info.value.retryable) == (code, retryable)
    assert len(fake.requests) == 1
    assert API_KEY not in str(info.value) and API_KEY not in info.value.message


def test_invalid_key_answer_is_an_auth_error(fake: FakeGemini, settings: AgentSettings) -> None:
    fake.fail_next("transcription", status=400, body={"error": {
        "code": 400, "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                     "reason": "API_KEY_INVALID", "domain": "googleapis.com"}],
    }})

    with pytest.raises(AgentError) as info:
        call_agent("transcription", settings)

    assert info.value.code == "upstream_auth" and not info.value.retryable


def test_a_hang_longer_than_the_timeout_fails_fast(fake: FakeGemini) -> None:
    fake.hang_next("story", seconds=10)
    started = time.monotonic()

    with pytest.raises(AgentError) as info:
        call_agent("story", short_timeouts())

    assert time.monotonic() - started < 5
    assert (info.value.code, info.value.retryable) == ("upstream_timeout", True)


@pytest.mark.parametrize("kind", ["transcription", "story", "illustration"])
def test_malformed_json_is_a_clean_retryable_error(
    fake: FakeGemini, settings: AgentSettings, kind: str
) -> None:
    fake.malformed_next(kind)

    with pytest.raises(AgentError) as info:
        call_agent(kind, settings)

    assert info.value.code == "upstream_unavailable" and info.value.retryable


def test_malformed_stream_is_a_clean_error(fake: FakeGemini, settings: AgentSettings) -> None:
    fake.malformed_next("text")

    with pytest.raises(AgentError) as info:
        list(gemini.generate_stream(
            settings, model="gemini-3.8-flash", contents="hi",
            config=types.GenerateContentConfig(), timeout_ms=5_000,
        ))

    assert info.value.code == "upstream_unavailable" and info.value.retryable


def test_dropped_connection_is_retryable(fake: FakeGemini, settings: AgentSettings) -> None:
    fake.drop_next("transcription")

    with pytest.raises(AgentError) as info:
        call_agent("transcription", settings)

    assert (info.value.code, info.value.retryable) == ("upstream_unavailable", True)


@pytest.mark.parametrize("kind", ["transcription", "story", "illustration"])
@pytest.mark.parametrize("on", ["prompt", "candidate"])
def test_safety_blocks_fail_fast(
    fake: FakeGemini, settings: AgentSettings, kind: str, on: str
) -> None:
    fake.block_next(kind, reason="SAFETY", on=on)  # type: ignore[arg-type]

    with pytest.raises(AgentError) as info:
        call_agent(kind, settings)

    assert (info.value.code, info.value.retryable) == ("blocked", False)
    assert "safety filters (reason: SAFETY)" in info.value.message


def test_empty_transcription_is_invalid_model_output(
    fake: FakeGemini, settings: AgentSettings
) -> None:
    fake.reply_next("transcription", "   ")

    with pytest.raises(AgentError) as info:
        call_agent("transcription", settings)

    assert (info.value.code, info.value.retryable) == ("invalid_model_output", True)


def test_text_instead_of_an_image_is_invalid_model_output(
    fake: FakeGemini, settings: AgentSettings
) -> None:
    fake.reply_next("illustration", "I cannot draw that, but here is a description.")

    with pytest.raises(AgentError) as info:
        call_agent("illustration", settings)

    assert (info.value.code, info.value.retryable) == ("invalid_model_output", True)


# --- story validation -----------------------------------------------------------------------


def _chapters(*ids: str | None) -> str:
    return json.dumps([
        {"title": f"T{i}", "content": "C", "illustrationPrompt": "P", "sourceNoteId": note_id}
        for i, note_id in enumerate(ids)
    ])


@pytest.mark.parametrize(
    "answer",
    [
        _chapters("n-1", "n-2"),  # a note is missing
        _chapters("n-2", "n-1", "n-1"),  # a note twice, out of order: which one was meant?
        _chapters("n-2", "n-9", "n-3"),  # an unknown note, out of order
        _chapters("n-1", None, None),  # two sections without sourceNoteId
        _chapters(),  # nothing at all
        '[{"title": "only a title"}]',  # no content
        "Once upon a time...",  # not JSON
    ],
    ids=["missing", "duplicated", "unknown", "none", "empty", "schema", "not-json"],
)
@pytest.mark.parametrize("mode", ["chapter", "transcription"])
def test_one_per_note_modes_reject_bad_answers_after_one_retry(
    fake: FakeGemini, settings: AgentSettings, answer: str, mode: str
) -> None:
    fake.reply_next("story", answer, n=2)

    with pytest.raises(AgentError) as info:
        GeminiStoryBuilder(settings).build(NOTES, "Lisbon", StorySettings(story_mode=mode))

    assert (info.value.code, info.value.retryable) == ("invalid_model_output", False)
    assert len(fake.requests_of("story")) == 2


@pytest.mark.parametrize(
    ("answer", "repaired"),
    [
        (_chapters("n-1", "n-2", "n-2"), "n-3"),  # a note twice, in order: the last is n-3
        (_chapters("n-1", "n-9", "n-3"), "n-2"),  # an unknown note, in order
        (_chapters(None, "n-2", "n-3"), "n-1"),  # no sourceNoteId, in order
    ],
    ids=["duplicated", "unknown", "none"],
)
def test_one_per_note_modes_repair_an_id_the_position_makes_certain(
    answer: str, repaired: str
) -> None:
    chapters = parse_chapters(answer, NOTES, "chapter")

    assert [c.source_note_id for c in chapters] == ["n-1", "n-2", "n-3"]
    assert repaired in [c.source_note_id for c in chapters]


def test_chapters_keep_the_order_they_were_streamed_in() -> None:
    # Chapters are published as they arrive: the final set cannot reorder them.
    chapters = parse_chapters(_chapters("n-3", "n-1", "n-2"), NOTES, "chapter")

    assert [c.source_note_id for c in chapters] == ["n-3", "n-1", "n-2"]


def test_fenced_json_is_accepted() -> None:
    chapters = parse_chapters(f"```json\n{_chapters('n-1', 'n-2', 'n-3')}\n```", NOTES, "chapter")

    assert len(chapters) == 3


def test_empty_note_list_is_rejected_before_any_call(
    fake: FakeGemini, settings: AgentSettings
) -> None:
    with pytest.raises(AgentError) as info:
        GeminiStoryBuilder(settings).build([], "Lisbon", StorySettings())

    assert (info.value.code, info.value.retryable) == ("invalid_input", False)
    assert fake.requests == []


@pytest.mark.parametrize(
    "story_settings",
    [StorySettings(story_mode="remix"), StorySettings(narrative_tone="sarcastic")],
)
def test_unknown_tone_or_mode_is_invalid_input(
    settings: AgentSettings, story_settings: StorySettings
) -> None:
    with pytest.raises(AgentError) as info:
        GeminiStoryBuilder(settings).build(NOTES, "Lisbon", story_settings)

    assert info.value.code == "invalid_input"


def test_note_id_convention_matches_the_fake() -> None:
    tricky = NoteInput(id="n-4", timestamp_ms=T0 + 2 * DAY_MS,
                       text_content="first line\nid: not-a-note\nlast line")

    context = build_story_context([*NOTES, tricky], "Lisbon")

    assert NOTE_ID_LINE.findall(context) == ["n-1", "n-2", "n-3", "n-4"]
    assert "    id: not-a-note" in context  # user lines stay indented


# --- error mapping details ------------------------------------------------------------------


def test_retry_delay_durations() -> None:
    assert parse_duration("7s") == 7.0
    assert parse_duration("0.500s") == 0.5
    assert parse_duration("soon") is None
    assert parse_duration(None) is None


def test_from_sdk_error_reads_retry_info_of_a_client_error() -> None:
    exc = genai_errors.ClientError(429, {"error": {
        "code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED",
        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}],
    }})

    error = from_sdk_error(exc)

    assert (error.code, error.retryable, error.retry_after) == ("upstream_rate_limited", True, 7.0)


def test_agent_error_survives_pickling() -> None:
    error = AgentError("upstream_rate_limited", "slow down", retryable=True, retry_after=3.0)

    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes

    assert (copy.code, copy.message, copy.retryable, copy.retry_after) == (
        "upstream_rate_limited", "slow down", True, 3.0,
    )


def test_settings_hide_the_key_and_treat_empty_as_unset() -> None:
    settings = AgentSettings.from_env({"GEMINI_API_KEY": API_KEY, "GEMINI_MODEL_IMAGE": ""})

    assert API_KEY not in repr(settings)
    assert settings.image.model == "gemini-nano-banana-2.1"
    assert AgentSettings.from_env({"GEMINI_API_KEY": "  "}).gemini_api_key is None
    with pytest.raises(ValueError, match="GEMINI_TIMEOUT_STORY_MS"):
        AgentSettings.from_env({"GEMINI_TIMEOUT_STORY_MS": "soon"})
