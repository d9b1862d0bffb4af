"""Fakes of external HTTP services that speak their real wire protocol (tests and benchmarks).

``from tests.fakes import FakeGemini`` works; the import is lazy so that
``python -m tests.fakes.gemini_server`` runs without importing its module twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.fakes.gemini_server import FakeGemini, RecordedRequest

__all__ = ["FakeGemini", "RecordedRequest"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tests.fakes import gemini_server

        return getattr(gemini_server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
