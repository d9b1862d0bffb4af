"""The fake Gemini's model catalog: which models exist, which are retired, and what each takes.

A model outside the catalog, or retired, answers exactly as Google answers a shut-down model:
``404 NOT_FOUND`` "models/X is not found for API version v1, or is not supported for
generateContent. Call ListModels ...". ``GET /{version}/models/{model}`` and ``GET
/{version}/models`` serve the ``Model`` resources (``models.get`` / ``models.list``).

Thinking configs are checked as the API checks them: a ``thinkingLevel`` together with a
``thinkingBudget``, a level sent to a 2.x model, or a level the model does not accept is
``400 INVALID_ARGUMENT``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

TEXT_METHODS = ("generateContent", "countTokens", "createCachedContent", "batchGenerateContent")
ALL_LEVELS = ("MINIMAL", "LOW", "MEDIUM", "HIGH")


@dataclass(frozen=True)
class FakeModel:
    name: str
    display_name: str
    version: str
    input_token_limit: int = 1_048_576
    output_token_limit: int = 65_536
    methods: tuple[str, ...] = TEXT_METHODS
    # Thinking levels it accepts (upper case, as on the wire); None: a 2.x budget model;
    # empty: no thinking config at all.
    levels: tuple[str, ...] | None = ("LOW", "MEDIUM", "HIGH")
    thinking: bool = True

    def resource(self) -> dict[str, Any]:
        """The ``Model`` resource as the REST API returns it."""
        return {
            "name": f"models/{self.name}",
            "version": self.version,
            "displayName": self.display_name,
            "description": f"{self.display_name} (fake)",
            "inputTokenLimit": self.input_token_limit,
            "outputTokenLimit": self.output_token_limit,
            "supportedGenerationMethods": list(self.methods),
            "temperature": 1.0,
            "maxTemperature": 2.0,
            "topP": 0.95,
            "topK": 64,
            "thinking": self.thinking,
        }


CATALOG: tuple[FakeModel, ...] = (
    FakeModel("gemini-3.8-flash", "Gemini 3.8 Flash", "3.8"),
    FakeModel("gemini-3.6-flash", "Gemini 3.6 Flash", "3.6", levels=ALL_LEVELS),
    FakeModel("gemini-3.5-flash-lite", "Gemini 3.5 Flash-Lite", "3.5", levels=ALL_LEVELS),
    FakeModel("gemini-3.1-flash-lite", "Gemini 3.1 Flash-Lite", "3.1", levels=ALL_LEVELS),
    FakeModel("gemini-nano-banana-2.1", "Gemini Nano Banana 2.1", "2.1",
              output_token_limit=32_768, methods=("generateContent", "countTokens"),
              levels=("MINIMAL", "HIGH")),
    FakeModel("gemini-3.8-flash-tts", "Gemini 3.8 Flash TTS", "3.8", input_token_limit=8_192,
              output_token_limit=16_384, methods=("generateContent", "countTokens"),
              levels=(), thinking=False),
    FakeModel("gemini-3.8-flash-lite-tts", "Gemini 3.8 Flash-Lite TTS", "3.8",
              input_token_limit=8_192, output_token_limit=16_384,
              methods=("generateContent", "countTokens"), levels=(), thinking=False),
    # Video: served by the Interactions API only (generateContent answers 400 for them).
    FakeModel("gemini-omni-1.2-flash", "Gemini Omni 1.2 Flash", "1.2", input_token_limit=131_072,
              output_token_limit=86_880, methods=("generateContent", "countTokens"),
              levels=(), thinking=False),
    FakeModel("gemini-omni-1.1-flash", "Gemini Omni 1.1 Flash", "1.1", input_token_limit=131_072,
              output_token_limit=57_920, methods=("generateContent", "countTokens"),
              levels=(), thinking=False),
    # Shut down (retired by default, see DEFAULT_RETIRED): kept so a test can bring them back.
    FakeModel("gemini-2.5-flash", "Gemini 2.5 Flash", "2.5", levels=None),
    FakeModel("gemini-2.5-flash-lite", "Gemini 2.5 Flash-Lite", "2.5", levels=None),
    FakeModel("gemini-2.5-flash-image", "Gemini 2.5 Flash Image", "2.5", levels=(),
              thinking=False),
    FakeModel("gemini-3.1-flash-image", "Gemini 3.1 Flash Image", "3.1",
              levels=("MINIMAL", "HIGH")),
    FakeModel("gemini-omni-flash-preview", "Gemini Omni Flash Preview", "preview",
              methods=("generateContent", "countTokens"), levels=(), thinking=False),
)

# What Google has shut down by 2026-12-01: every 2.x model, Nano Banana 2 and the Omni Flash
# preview (2026-09-30).
DEFAULT_RETIRED: frozenset[str] = frozenset(
    {m.name for m in CATALOG if m.name.startswith("gemini-2.")}
    | {"gemini-3.1-flash-image", "gemini-omni-flash-preview"}
)


@dataclass
class ModelCatalog:
    """The models the fake serves; ``retired`` ones (and any unknown name) answer 404."""

    models: dict[str, FakeModel] = field(
        default_factory=lambda: {m.name: m for m in CATALOG})
    retired: set[str] = field(default_factory=lambda: set(DEFAULT_RETIRED))

    def add(self, model: FakeModel) -> None:
        self.models[model.name] = model

    def retire(self, names: Iterable[str]) -> None:
        self.retired |= set(names)

    def revive(self, names: Iterable[str]) -> None:
        self.retired -= set(names)

    def live(self, name: str) -> FakeModel | None:
        model = self.models.get(name)
        return None if model is None or name in self.retired else model

    def listing(self) -> list[dict[str, Any]]:
        return [m.resource() for name, m in sorted(self.models.items())
                if name not in self.retired]


def not_found_message(model: str, version: str, method: str) -> str:
    return (f"models/{model} is not found for API version {version}, or is not supported for "
            f"{method}. Call ListModels to see the list of available models and their "
            "supported methods.")


def thinking_of(generation_config: Mapping[str, Any]) -> dict[str, Any]:
    """The request's thinking config with camelCase keys. Like any proto3 JSON endpoint, the API
    takes either spelling, and google-genai sends this nested object in snake_case."""
    thinking = generation_config.get("thinkingConfig", generation_config.get("thinking_config"))
    if not isinstance(thinking, Mapping):
        return {}
    return {"".join(w.capitalize() if i else w for i, w in enumerate(k.split("_"))): v
            for k, v in thinking.items()}


def thinking_error(model: FakeModel, generation_config: Mapping[str, Any]) -> str | None:
    """The 400 message for an invalid thinking config, None when it is acceptable."""
    thinking = thinking_of(generation_config)
    level = thinking.get("thinkingLevel")
    budget = thinking.get("thinkingBudget")
    if level is not None and budget is not None:
        return "You can only set only one of thinking budget and thinking level."
    if level is None:
        if budget is not None and model.levels is not None and not model.thinking:
            return f"Thinking is not supported by models/{model.name}."
        return None
    if model.levels is None:
        return f"Thinking level is not supported for models/{model.name}; use thinking budget."
    if str(level).upper() not in model.levels:
        accepted = ", ".join(model.levels) or "none"
        return (f"Thinking level {str(level).upper()} is not supported for models/{model.name}."
                f" Supported levels: {accepted}.")
    return None
