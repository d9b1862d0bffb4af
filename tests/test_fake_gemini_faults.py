"""The fake Gemini's random fault injection, seen through the real google-genai SDK and the agents:
the observed fault share follows the configured rate, and every kind of fault surfaces as the
``AgentError`` code the platform's retry policy keys on."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from google.genai import types

from agents import gemini
from agents.config import AgentSettings
from agents.errors import AgentError
from agents.illustration import GeminiIllustrator
from agents.transcription import GeminiTranscriber
from tests.fakes.gemini_server import (
    DEFAULT_FAULT_MIX,
    RANDOM_FAULT_KINDS,
    FakeGemini,
    build_parser,
    fake_from_args,
    parse_fault_mix,
)

API_KEY = "test-key-fault-injection"
SEED = 20240501
CALLS = 200
RATE = 0.3
HANG_S = 1.5
TIMEOUT_MS = 500  # the client gives up long before a hang ends

# What the agents make of each random fault kind: (code, retryable).
EXPECTED: dict[str, tuple[str, bool]] = {
    "rate_limited": ("upstream_rate_limited", True),
    "unavailable": ("upstream_unavailable", True),
    "hang": ("upstream_timeout", True),
    "drop": ("upstream_unavailable", True),
    "malformed": ("upstream_unavailable", True),
    "quota_day": ("upstream_quota_exhausted", False),
}


def settings_for(fake: FakeGemini) -> AgentSettings:
    """Agents pointed at this fake, with timeouts far below its hangs."""
    return AgentSettings(
        gemini_api_key=API_KEY,
        transcription_timeout_ms=TIMEOUT_MS,
        story_timeout_ms=TIMEOUT_MS,
        illustration_timeout_ms=TIMEOUT_MS,
        base_url=fake.base_url,
    )


@pytest.fixture(autouse=True)
def fresh_clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("GOOGLE_GENAI_API_VERSION", raising=False)
    monkeypatch.delenv("GOOGLE_GENAI_USE_VERTEXAI", raising=False)
    gemini.reset_clients()
    yield
    gemini.reset_clients()


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with FakeGemini(seed=SEED, hang_seconds=HANG_S) as server:
        yield server


@pytest.fixture
def settings(fake: FakeGemini) -> AgentSettings:
    return settings_for(fake)


def transcribe(settings: AgentSettings, n: int) -> AgentError | None:
    """One transcription call; the AgentError it raised, or None on success."""
    try:
        result = GeminiTranscriber(settings).transcribe(n.to_bytes(4, "big"), "audio/wav")
    except AgentError as exc:
        return exc
    assert result.text == "Hello from the fake Gemini"
    return None


def test_random_faults_follow_the_rate_and_map_to_agent_error_codes(
    fake: FakeGemini, settings: AgentSettings
) -> None:
    fake.set_faults(RATE)

    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(lambda n: transcribe(settings, n), range(CALLS)))

    counts = fake.fault_counts
    injected = sum(counts.values())
    errors = [e for e in outcomes if e is not None]
    # Every call drew once; the share is the rate's within 2.5 standard deviations (this seed
    # draws 47 faults in 200 calls, 23.5%).
    assert fake.request_count == CALLS
    assert abs(injected / CALLS - RATE) < 2.5 * math.sqrt(RATE * (1 - RATE) / CALLS), counts
    assert counts["quota_day"] == 0  # not in the default mix
    assert all(counts[kind] > 0 for kind in DEFAULT_FAULT_MIX), counts
    # Each injected fault failed exactly one call, with the code its kind maps to.
    assert len(errors) == injected
    expected_codes: Counter[str] = Counter()
    for kind, count in counts.items():
        expected_codes[EXPECTED[kind][0]] += count
    assert Counter(e.code for e in errors) == +expected_codes
    assert all(e.retryable for e in errors)
    recorded = Counter(r.fault for r in fake.requests if r.fault is not None)
    assert recorded == +Counter(counts)


def test_the_same_seed_injects_the_same_faults_in_the_same_order() -> None:
    def sequence() -> list[str | None]:
        with FakeGemini(seed=7, fault_rate=0.5, fault_mix={"unavailable": 1, "malformed": 1}) as f:
            for n in range(30):
                transcribe(settings_for(f), n)
            return [r.fault for r in f.requests]

    first, second = sequence(), sequence()

    assert first == second
    assert {None, "unavailable", "malformed"} == set(first)


@pytest.mark.parametrize("kind", RANDOM_FAULT_KINDS)
def test_each_kind_surfaces_as_its_agent_error(
    fake: FakeGemini, settings: AgentSettings, kind: str
) -> None:
    fake.set_faults(1.0, {kind: 1})
    started = time.monotonic()

    with pytest.raises(AgentError) as info:
        GeminiIllustrator(settings).illustrate("A lighthouse in a storm", "illustration")

    error = info.value
    assert (error.code, error.retryable) == EXPECTED[kind]
    assert fake.fault_counts == {**dict.fromkeys(RANDOM_FAULT_KINDS, 0), kind: 1}
    (request,) = fake.requests
    assert request.fault == kind and request.kind == "illustration"
    if kind == "rate_limited":
        assert (error.upstream_status, error.retry_after) == (429, 1.0)
    if kind == "unavailable":
        assert error.upstream_status == 503
    if kind == "hang":
        assert time.monotonic() - started < HANG_S  # the client timed out; the fake still hung
    if kind == "drop":
        assert request.status == 0 and error.upstream_status is None
    if kind == "malformed":
        assert request.status == 200 and error.detail == "JSONDecodeError"


def test_a_malformed_stream_is_an_unavailable_error(
    fake: FakeGemini, settings: AgentSettings
) -> None:
    fake.set_faults(1.0, {"malformed": 1})

    with pytest.raises(AgentError) as info:
        list(gemini.generate_stream(
            settings, model="gemini-3.8-flash", contents="hi",
            config=types.GenerateContentConfig(), timeout_ms=5_000,
        ))

    assert (info.value.code, info.value.retryable) == ("upstream_unavailable", True)


def test_the_rate_limit_delay_is_configurable() -> None:
    with FakeGemini(fault_rate=1.0, fault_mix={"rate_limited": 1}, rate_limit_delay="7s") as f:
        error = transcribe(settings_for(f), 1)

    assert error is not None
    assert (error.code, error.retry_after) == ("upstream_rate_limited", 7.0)


def test_scripted_faults_come_first_and_rate_zero_turns_faults_off(
    fake: FakeGemini, settings: AgentSettings
) -> None:
    fake.set_faults(1.0, {"malformed": 1})
    fake.fail_next("transcription", status=400)

    first, second = transcribe(settings, 1), transcribe(settings, 2)
    fake.set_faults(0.0)
    third = transcribe(settings, 3)

    assert first is not None and first.code == "upstream_bad_request"
    assert second is not None and second.code == "upstream_unavailable"
    assert third is None
    assert [r.fault for r in fake.requests] == ["scripted:status", "malformed", None]
    assert fake.fault_counts["malformed"] == 1 and sum(fake.fault_counts.values()) == 1


def test_no_faults_by_default_and_reset_restores_the_initial_settings(
    fake: FakeGemini, settings: AgentSettings
) -> None:
    assert fake.fault_rate == 0.0 and fake.fault_mix == dict(DEFAULT_FAULT_MIX)
    assert all(transcribe(settings, n) is None for n in range(20))
    assert sum(fake.fault_counts.values()) == 0 and fake.last_fault_at is None

    fake.set_faults(1.0, {"unavailable": 1})
    assert transcribe(settings, 99) is not None
    assert fake.last_fault_at is not None

    fake.reset()
    assert fake.fault_rate == 0.0 and fake.fault_mix == dict(DEFAULT_FAULT_MIX)
    assert sum(fake.fault_counts.values()) == 0 and fake.last_fault_at is None
    assert transcribe(settings, 100) is None


@pytest.mark.parametrize(
    ("rate", "mix"),
    [(-0.1, None), (1.5, None), (0.3, {"teapot": 1}), (0.3, {"hang": -1}), (0.3, {"hang": 0})],
)
def test_invalid_fault_settings_are_refused(rate: float, mix: dict[str, float] | None) -> None:
    with pytest.raises(ValueError):
        FakeGemini(fault_rate=rate, fault_mix=mix)


def test_command_line_options() -> None:
    args = build_parser().parse_args([
        "--port", "0", "--latency", "0.2", "--fault-rate", "0.3", "--hang-seconds", "12",
        "--seed", "5", "--fault-mix", "rate_limited=2,unavailable,quota_day=0.5",
    ])

    fake = fake_from_args(args)

    assert fake.latency == 0.2 and fake.hang_seconds == 12.0
    assert fake.fault_rate == 0.3
    assert fake.fault_mix == {"rate_limited": 2.0, "unavailable": 1.0, "quota_day": 0.5}
    default = fake_from_args(build_parser().parse_args([]))
    assert default.fault_rate == 0.0 and default.fault_mix == dict(DEFAULT_FAULT_MIX)
    with pytest.raises(ValueError):
        parse_fault_mix("hang=1,teapot=2")
