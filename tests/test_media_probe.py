"""The photo guard: caps checked from the header before any decode, then a plain JPEG out."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from PIL import Image

from agents.errors import AgentError
from agents.media.probe import ImageCaps, normalise_image, probe_image
from tests.film_media import png_bomb

CAPS = ImageCaps()
FRAME = (320, 180)


def two_tone(path: Path, size: tuple[int, int], fmt: str = "JPEG", **save: object) -> Path:
    """Left half red, right half blue."""
    image = Image.new("RGB", size, (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, size[0] // 2, size[1]))
    image.save(path, fmt, **save)
    return path


def rejected(call: object) -> AgentError:
    with pytest.raises(AgentError) as caught:
        call()  # type: ignore[operator]
    assert caught.value.code == "media_rejected"
    assert caught.value.retryable is False
    return caught.value


def close(pixel: tuple[int, ...], expected: tuple[int, int, int], tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=False))


def test_probe_reads_the_header(tmp_path: Path) -> None:
    probe = probe_image(two_tone(tmp_path / "a.jpg", (640, 480)), CAPS)
    assert (probe.format, probe.width, probe.height, probe.mode) == ("JPEG", 640, 480, "RGB")
    assert probe.decoded_bytes == 640 * 480 * 3


def test_a_40000_pixel_square_png_is_refused_from_its_header(tmp_path: Path) -> None:
    path = png_bomb(tmp_path / "huge.png", 40_000, 40_000, rows=1)
    started = time.monotonic()
    error = rejected(lambda: normalise_image(path, tmp_path / "out.jpg", FRAME, CAPS))
    assert "pixel limit" in error.message
    assert time.monotonic() - started < 1.0  # no decode was attempted
    assert not (tmp_path / "out.jpg").exists()


def test_a_decompression_bomb_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    # 121 MP of black compresses to ~120 KB: within the side limit, over the pixel cap.
    path = png_bomb(tmp_path / "bomb.png", 11_000, 11_000)
    assert path.stat().st_size < 1_000_000
    error = rejected(lambda: normalise_image(path, tmp_path / "out.jpg", FRAME, CAPS))
    assert "pixel limit" in error.message


def test_decoded_size_and_file_size_caps(tmp_path: Path) -> None:
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (1000, 1000), (1, 2, 3, 4)).save(rgba)
    error = rejected(lambda: probe_image(rgba, ImageCaps(max_decoded_bytes=3_000_000)))
    assert "4000000 bytes" in error.message
    photo = two_tone(tmp_path / "big.jpg", (640, 480))
    rejected(lambda: probe_image(photo, ImageCaps(max_file_bytes=1000)))


@pytest.mark.parametrize(
    "content",
    [b"", b"#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:0\nfile:///etc/passwd\n", b"GIF89a" + b"\x00" * 10],
    ids=["empty", "playlist", "broken-gif"],
)
def test_what_is_not_an_image_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    rejected(lambda: probe_image(path, CAPS))


def test_formats_outside_the_list_are_refused(tmp_path: Path) -> None:
    tiff = two_tone(tmp_path / "scan.tiff", (64, 48), "TIFF")
    rejected(lambda: probe_image(tiff, CAPS))


def test_a_truncated_photo_fails_at_decode(tmp_path: Path) -> None:
    data = two_tone(tmp_path / "full.jpg", (640, 480), quality=95).read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 3])
    assert probe_image(cut, CAPS).width == 640  # the header is whole
    error = rejected(lambda: normalise_image(cut, tmp_path / "out.jpg", FRAME, CAPS))
    assert "could not be decoded" in error.message


def test_a_landscape_photo_fills_the_frame(tmp_path: Path) -> None:
    source = two_tone(tmp_path / "wide.jpg", (1600, 1000))
    normalise_image(source, tmp_path / "out.jpg", FRAME, CAPS)
    with Image.open(tmp_path / "out.jpg") as out:
        assert (out.format, out.size, out.mode) == ("JPEG", FRAME, "RGB")
        assert close(out.getpixel((5, 90)), (255, 0, 0))  # type: ignore[arg-type]
        assert close(out.getpixel((315, 90)), (0, 0, 255))  # type: ignore[arg-type]


def test_a_portrait_photo_is_shown_whole_and_upright_over_a_blur(tmp_path: Path) -> None:
    # Stored sideways (200x100, left red) with EXIF orientation 6: upright it is 100x200,
    # red on top. Shown whole it is contained in the frame's middle, blurred copy around it.
    exif = Image.Exif()
    exif[0x0112] = 6
    source = two_tone(tmp_path / "sideways.jpg", (200, 100), exif=exif.tobytes())
    normalise_image(source, tmp_path / "out.jpg", FRAME, CAPS)
    with Image.open(tmp_path / "out.jpg") as out:
        assert out.size == FRAME
        assert close(out.getpixel((160, 30)), (255, 0, 0))  # type: ignore[arg-type]
        assert close(out.getpixel((160, 150)), (0, 0, 255))  # type: ignore[arg-type]
        side = out.getpixel((10, 30))
        assert isinstance(side, tuple) and max(side) < 200  # darkened blur, not the photo


def test_transparency_and_16_bit_and_animation_are_flattened(tmp_path: Path) -> None:
    clear = tmp_path / "clear.png"
    Image.new("RGBA", (64, 36), (255, 255, 255, 0)).save(clear)
    normalise_image(clear, tmp_path / "a.jpg", FRAME, CAPS)
    with Image.open(tmp_path / "a.jpg") as out:
        assert close(out.getpixel((160, 90)), (20, 20, 28), 8)  # type: ignore[arg-type]

    deep = tmp_path / "deep.png"
    Image.new("I;16", (64, 36), 40_000).save(deep)
    normalise_image(deep, tmp_path / "b.jpg", FRAME, CAPS)
    with Image.open(tmp_path / "b.jpg") as out:
        assert close(out.getpixel((160, 90)), (156, 156, 156), 8)  # type: ignore[arg-type]

    frames = [Image.new("RGB", (64, 36), colour) for colour in ((0, 200, 0), (200, 0, 0))]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    (tmp_path / "anim.gif").write_bytes(gif.getvalue())
    normalise_image(tmp_path / "anim.gif", tmp_path / "c.jpg", FRAME, CAPS)
    with Image.open(tmp_path / "c.jpg") as out:
        assert close(out.getpixel((160, 90)), (0, 200, 0))  # type: ignore[arg-type]
