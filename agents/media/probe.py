"""Hostile-media guard for photos: read the header, check the caps, only then decode.

A photo reaches the renderer only through :func:`normalise_image`: the header is probed
(:func:`probe_image`) against :class:`ImageCaps` before any pixel is decoded, the decode itself
is bounded by those caps, and what is written out is a plain JPEG of the size the renderer asked
for. A decompression bomb or a 40000x40000 PNG fails with ``AgentError("media_rejected")``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from agents.errors import AgentError

# Formats a phone or our illustrator produces; anything else (PSD, TIFF, EPS...) is refused
# before a decoder runs.
ALLOWED_FORMATS: frozenset[str] = frozenset({"JPEG", "PNG", "WEBP", "GIF"})
_BYTES_PER_BAND = {"I;16": 2, "I;16B": 2, "I;16L": 2, "I": 4, "F": 4}
_BACKGROUND = (20, 20, 28)  # behind transparent pixels: the renderer's plain background colour


@dataclass(frozen=True)
class ImageCaps:
    """What a photo may be before it is decoded: a 48 MP phone photo passes, a bomb does not."""

    max_file_bytes: int = 50 * 1024 * 1024
    max_dimension: int = 12_000
    max_pixels: int = 50_000_000
    max_decoded_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True)
class ImageProbe:
    """What an image's header says, checked against the caps."""

    format: str
    width: int
    height: int
    mode: str
    decoded_bytes: int


def _rejected(path: Path, reason: str) -> AgentError:
    return AgentError("media_rejected", f"Image {path.name} was rejected: {reason}.",
                      retryable=False)


def _decoded_bytes(image: Image.Image) -> int:
    bands = len(image.getbands())
    return image.width * image.height * bands * _BYTES_PER_BAND.get(image.mode, 1)


def _open_checked(path: Path, caps: ImageCaps) -> tuple[Image.Image, ImageProbe]:
    """Open (header only) and check against the caps; the caller closes the image."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise _rejected(path, "it cannot be read") from exc
    if size == 0:
        raise _rejected(path, "the file is empty")
    if size > caps.max_file_bytes:
        raise _rejected(path, f"the file is larger than {caps.max_file_bytes} bytes")
    try:
        with warnings.catch_warnings():
            # Pillow warns (then raises at twice its limit) on large images: our caps decide.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path, formats=sorted(ALLOWED_FORMATS))
    except Image.DecompressionBombError as exc:  # Pillow's own guard, at twice its limit
        raise _rejected(path, f"it is far over the {caps.max_pixels}-pixel limit") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise _rejected(path, "it is not a JPEG, PNG, WebP or GIF image") from exc
    probe = ImageProbe(
        format=str(image.format),
        width=image.width,
        height=image.height,
        mode=image.mode,
        decoded_bytes=_decoded_bytes(image),
    )
    reason = _cap_violation(probe, caps)
    if reason:
        image.close()
        raise _rejected(path, reason)
    return image, probe


def _cap_violation(probe: ImageProbe, caps: ImageCaps) -> str | None:
    if probe.width <= 0 or probe.height <= 0:
        return "it has no pixels"
    if max(probe.width, probe.height) > caps.max_dimension:
        return (f"{probe.width}x{probe.height} pixels is over the "
                f"{caps.max_dimension}-pixel side limit")
    if probe.width * probe.height > caps.max_pixels:
        return f"{probe.width}x{probe.height} pixels is over the {caps.max_pixels}-pixel limit"
    if probe.decoded_bytes > caps.max_decoded_bytes:
        return f"it decodes to {probe.decoded_bytes} bytes, over {caps.max_decoded_bytes}"
    return None


def probe_image(path: Path, caps: ImageCaps) -> ImageProbe:
    """The header facts of an image within the caps; ``media_rejected`` otherwise. No decode."""
    image, probe = _open_checked(path, caps)
    image.close()
    return probe


def _cover(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    return ImageOps.fit(image, size, Image.Resampling.LANCZOS)


def _fit_on_blur(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The whole picture, centred, over a blurred and darkened cover of itself."""
    # Blur a small copy, then enlarge it: the same look for a fraction of the work.
    small = _cover(image, (max(1, size[0] // 8), max(1, size[1] // 8)))
    small = small.filter(ImageFilter.GaussianBlur(radius=3))
    background = small.resize(size, Image.Resampling.BILINEAR).point(lambda v: int(v * 0.55))
    fitted = ImageOps.contain(image, size, Image.Resampling.LANCZOS)
    background.paste(fitted, ((size[0] - fitted.width) // 2, (size[1] - fitted.height) // 2))
    return background


def normalise_image(
    source: Path, target: Path, size: tuple[int, int], caps: ImageCaps, *,
    max_aspect_crop: float = 1.25,
) -> ImageProbe:
    """Probe ``source``, decode it within the caps and write a plain RGB JPEG of ``size``.

    Photos close to the frame's shape fill it (cropped at the edges); others (portraits, panoramas:
    aspect ratios more than ``max_aspect_crop`` apart) are shown whole over a blurred copy.
    """
    image, probe = _open_checked(source, caps)
    try:
        with image:
            if probe.format == "JPEG":
                # libjpeg decodes at 1/2, 1/4 or 1/8 scale, still at least ``size``: a 12 MP
                # photo for a 720p frame costs a quarter of a full decode.
                image.draft("RGB", size)
            image.seek(0)  # animated GIF/WebP: the first frame
            image.load()
            upright = ImageOps.exif_transpose(image)
            rgb = _flatten(upright)
    except AgentError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError) as exc:
        raise _rejected(source, "it could not be decoded") from exc
    ratio = (rgb.width / rgb.height) / (size[0] / size[1])
    framed = _cover(rgb, size) if 1 / max_aspect_crop <= ratio <= max_aspect_crop else (
        _fit_on_blur(rgb, size))
    # Always 4:2:0 (what the video is made of): a renderer reading several of these as one
    # image sequence must not see the format change midway.
    framed.save(target, "JPEG", quality=90, subsampling=2)
    return probe


def _flatten(image: Image.Image) -> Image.Image:
    """RGB pixels, with any transparency laid on the plain background colour."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        base = Image.new("RGB", rgba.size, _BACKGROUND)
        base.paste(rgba, mask=rgba.getchannel("A"))
        return base
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return image.point(lambda v: v / 256).convert("L").convert("RGB")
    return image.convert("RGB")
