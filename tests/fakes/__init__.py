"""Fakes of external HTTP services that speak their real wire protocol (tests and benchmarks)."""

from tests.fakes.gemini_server import FakeGemini, RecordedRequest

__all__ = ["FakeGemini", "RecordedRequest"]
