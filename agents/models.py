"""What we know about Gemini models: which thinking settings and sampling knobs each family
takes, and which models this process found unavailable (retired or unknown) and when.

Google retires models every few months; a retired model answers ``404 NOT_FOUND``. The agents
then move to the route's next model and remember the failure for ``model_recheck_s`` seconds,
so jobs do not pay a failed call each.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from google.genai import types

from agents.config import ModelRoute
from agents.errors import AgentError

log = logging.getLogger(__name__)

LEVELS: tuple[str, ...] = ("minimal", "low", "medium", "high")

# Gemini 2.x models take a thinking *budget* (tokens); a level sent to one is a 400. Budgets
# for our level names: 0 turns thinking off on Flash models; -1 is "dynamic".
_BUDGETS: dict[str, int] = {"minimal": 0, "low": 1024, "medium": 8192, "high": -1}
_GEMINI_VERSION = re.compile(r"^gemini-(\d+)(?:\.(\d+))?")
# Families that generate media rather than text: their thinking and sampling are left to
# the model unless a level is configured explicitly.
_MEDIA_MARKERS = ("-image", "-tts", "nano-banana", "veo", "omni", "-audio")


@dataclass(frozen=True)
class ModelTraits:
    """How a model family is driven: thinking levels (None: a budget), sampling, media."""

    levels: tuple[str, ...] | None
    takes_temperature: bool
    media: bool = False


def model_traits(model: str) -> ModelTraits:
    """The traits of a model from its name (Google's docs, read 2026-12-01)."""
    name = model.lower().removeprefix("models/")
    media = any(marker in name for marker in _MEDIA_MARKERS)
    match = _GEMINI_VERSION.match(name)
    major = int(match.group(1)) if match else None
    if major is not None and major < 3:
        return ModelTraits(levels=None, takes_temperature=True, media=media)
    # Gemini 3.x: thinking levels; temperature/top-p are deprecated (ignored or refused).
    if "flash-lite" in name:
        levels: tuple[str, ...] = LEVELS  # minimal is the Flash-Lite default
    elif re.match(r"^gemini-3\.[78]-flash$", name) or "-pro" in name:
        levels = ("low", "medium", "high")  # 3.7/3.8 Flash and the Pros dropped minimal
    elif "flash" in name and not media:
        levels = LEVELS
    else:
        levels = ("low", "medium", "high")  # an unknown 3.x: the levels every 3.x accepts
    return ModelTraits(levels=levels, takes_temperature=False, media=media)


# Clip lengths (whole seconds) each video family accepts (Google's docs and the SDK, read
# 2026-12-01): Omni 1.2 Flash 3-15 s, Omni 1.1 Flash and the preview 3-10 s, Veo 4/6/8 s.
_VIDEO_SECONDS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("gemini-omni-1.2", tuple(range(3, 16))),
    ("gemini-omni", tuple(range(3, 11))),
    ("veo-", (4, 6, 8)),
)


def video_durations(model: str) -> tuple[int, ...]:
    """The clip lengths, in seconds, a video model accepts (8 s only for an unknown model)."""
    name = model.lower().removeprefix("models/")
    return next((seconds for prefix, seconds in _VIDEO_SECONDS if name.startswith(prefix)), (8,))


def route_video_durations(route: ModelRoute) -> tuple[int, ...]:
    """The clip lengths every model of the route accepts, so a fallback never refuses one."""
    allowed = set(video_durations(route.model))
    for model in route.fallbacks:
        allowed &= set(video_durations(model))
    return tuple(sorted(allowed)) or video_durations(route.model)


def thinking_config(model: str, wanted: str) -> types.ThinkingConfig | None:
    """The thinking field this model takes for the wanted setting, never both kinds.

    ``default`` sends nothing. A level the model does not accept becomes the nearest level it
    does accept above it (``minimal`` on a model without it: ``low``)."""
    if wanted == "default":
        return None
    traits = model_traits(model)
    level = "minimal" if wanted == "lowest" else wanted
    if traits.levels is None:
        if traits.media:
            return None  # 2.x image/speech models take no thinking config at all
        return types.ThinkingConfig(thinking_budget=_BUDGETS[level])
    if wanted == "lowest":
        level = traits.levels[0]
    elif level not in traits.levels:
        higher = [lv for lv in traits.levels if LEVELS.index(lv) >= LEVELS.index(level)]
        level = higher[0] if higher else traits.levels[-1]
    return types.ThinkingConfig(thinking_level=types.ThinkingLevel(level.upper()))


def for_model(
    config: types.GenerateContentConfig, model: str, route: ModelRoute,
    *, temperature: float | None = None,
) -> types.GenerateContentConfig:
    """``config`` with the route's thinking and, where the family takes it, a temperature."""
    update: dict[str, object] = {}
    thinking = thinking_config(model, route.thinking)
    if thinking is not None:
        update["thinking_config"] = thinking
    if temperature is not None and model_traits(model).takes_temperature:
        update["temperature"] = temperature
    return config.model_copy(update=update) if update else config


# --- availability --------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelCheck:
    """What the API said about a model the last time it was asked (``found`` None: unknown,
    the check itself failed)."""

    model: str
    found: bool | None
    checked_at: float
    detail: str | None = None
    input_token_limit: int | None = None
    output_token_limit: int | None = None
    supported_actions: tuple[str, ...] = ()


class ModelAvailability:
    """This process's memory of which models answered and which were not found."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._checks: dict[str, ModelCheck] = {}

    def record(self, check: ModelCheck) -> None:
        with self._lock:
            known = self._checks.get(check.model)
            if check.found is None and known is not None and known.found is not None:
                # The check itself failed: what we knew of the model still stands.
                check = replace(known, checked_at=check.checked_at)
            self._checks[check.model] = check

    def mark_unavailable(self, model: str, detail: str | None = None) -> None:
        self.record(ModelCheck(model, False, time.time(), detail))

    def mark_answered(self, model: str) -> None:
        """A call succeeded: the model exists (keeps what a check learned about it)."""
        with self._lock:
            known = self._checks.get(model)
            if known is None or known.found is not True:
                self._checks[model] = ModelCheck(model, True, time.time())

    def last(self, model: str) -> ModelCheck | None:
        with self._lock:
            return self._checks.get(model)

    def is_unavailable(self, model: str, recheck_s: float) -> bool:
        """Known not found, and not yet due for another try."""
        check = self.last(model)
        return bool(check and check.found is False
                    and time.time() - check.checked_at < recheck_s)

    def candidates(self, route: ModelRoute, recheck_s: float) -> list[str]:
        """The route's models to try now, in order: those not known to be unavailable."""
        return [m for m in route.chain if not self.is_unavailable(m, recheck_s)]

    def active(self, route: ModelRoute, recheck_s: float) -> str:
        """The model a call of this route goes to now (for rate limits and cache keys)."""
        return next(iter(self.candidates(route, recheck_s)), route.model)

    def clear(self) -> None:
        with self._lock:
            self._checks.clear()


# One memory per process, shared by every agent and thread (like the SDK client).
availability = ModelAvailability()


def unavailable_error(route: ModelRoute, tried: Sequence[str]) -> AgentError:
    """``model_unavailable``: no model of the route answers; names them and the settings."""
    models = ", ".join(repr(m) for m in (tried or route.chain))
    return AgentError(
        "model_unavailable",
        f"The {route.agent} model{'s' if len(tried) > 1 else ''} {models} "
        f"{'are' if len(tried) > 1 else 'is'} not available from the AI provider (retired or "
        f"unknown). Set {route.setting} (or {route.fallback_setting}) to a current model.",
        retryable=False,
    )


@dataclass(frozen=True)
class RouteStatus:
    """An agent's route and what is known of each of its models, in order."""

    route: ModelRoute
    checks: tuple[ModelCheck | None, ...]  # one per model of ``route.chain``

    @property
    def answering(self) -> str | None:
        """The first model known to answer."""
        return next((c.model for c in self.checks if c is not None and c.found), None)

    @property
    def state(self) -> str:
        """``ok`` (its model answers), ``fallback`` (a fallback does), ``unavailable`` (every
        model was found missing) or ``unknown`` (the API could not be asked)."""
        answering = self.answering
        if answering is not None:
            return "ok" if answering == self.route.model else "fallback"
        if self.checks and all(c is not None and c.found is False for c in self.checks):
            return "unavailable"
        return "unknown"


def route_status(route: ModelRoute) -> RouteStatus:
    """What this process knows of each model of the route."""
    return RouteStatus(route, tuple(availability.last(m) for m in route.chain))
