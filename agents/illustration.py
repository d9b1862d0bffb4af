"""Illustration agent: a scene description and a style in, a 4:3 image out (a Gemini image
model through ``generate_content`` with image output)."""

from __future__ import annotations

import io

from google.genai import types
from PIL import Image, UnidentifiedImageError

from agents import gemini
from agents.config import AgentSettings
from agents.errors import AgentError
from agents.models import availability
from agents.prompts import (
    ILLUSTRATION_PROMPT_VERSION,
    ILLUSTRATION_STYLE_TEMPLATES,
    illustration_prompt,
)
from agents.types import ImageResult

ASPECT_RATIO = "4:3"
MAX_PROMPT_CHARS = 4000


def check_illustration_input(prompt: str, style: str) -> str:
    """Validate a scene and style; return the scene stripped."""
    scene = prompt.strip()
    if not scene:
        raise AgentError("invalid_input", "The illustration prompt is empty.", retryable=False)
    if len(scene) > MAX_PROMPT_CHARS:
        raise AgentError(
            "invalid_input",
            f"The illustration prompt is longer than {MAX_PROMPT_CHARS} characters.",
            retryable=False,
        )
    if style not in ILLUSTRATION_STYLE_TEMPLATES:
        raise AgentError("invalid_input", f"Unknown image style {style!r}.", retryable=False)
    return scene


def image_size(data: bytes) -> tuple[int, int]:
    """Width and height of encoded image bytes; ``invalid_model_output`` if not an image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as exc:
        raise AgentError(
            "invalid_model_output", "The generated image could not be decoded.", retryable=True
        ) from exc


def first_image(response: types.GenerateContentResponse) -> tuple[bytes, str]:
    """The first inline image of the first candidate, with its MIME type."""
    candidates = response.candidates or []
    content = candidates[0].content if candidates else None
    for part in (content.parts if content else None) or []:
        blob = part.inline_data
        if blob and blob.data and (blob.mime_type or "").startswith("image/"):
            return blob.data, str(blob.mime_type)
    raise AgentError("invalid_model_output", "The AI provider returned no image.", retryable=True)


class GeminiIllustrator:
    """Draws chapter illustrations with the Gemini image model."""

    prompt_version = ILLUSTRATION_PROMPT_VERSION

    def __init__(self, settings: AgentSettings) -> None:
        self._settings = settings

    @property
    def model(self) -> str:
        """The model the next call goes to: the route's first one not known to be retired."""
        return availability.active(self._settings.image, self._settings.model_recheck_s)

    def illustrate(self, prompt: str, style: str) -> ImageResult:
        """Generate one 4:3 image; raises ``AgentError`` on any failure."""
        scene = check_illustration_input(prompt, style)
        response, model = gemini.generate_routed(
            self._settings,
            route=self._settings.image,
            contents=illustration_prompt(scene, style),
            config=types.GenerateContentConfig(
                response_modalities=["IMAGE"],
                image_config=types.ImageConfig(aspect_ratio=ASPECT_RATIO),
            ),
            timeout_ms=self._settings.illustration_timeout_ms,
        )
        data, mime_type = first_image(response)
        width, height = image_size(data)
        return ImageResult(
            data=data,
            mime_type=mime_type,
            width=width,
            height=height,
            usage=gemini.usage_of(response, model),
        )
