"""Local and Cloudinary media storage; Cloudinary through the real SDK against a local fake."""

from __future__ import annotations

import inspect
import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from agents.media import (
    CloudinaryMediaStorage,
    LocalMediaStorage,
    MediaError,
    MediaStorage,
    build_storage,
)
from tests.fakes.cloudinary_server import FakeCloudinary

ROOT = Path(__file__).resolve().parents[1]


def png_bytes(color: str = "red", size: tuple[int, int] = (4, 3)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


WEBM_AUDIO = bytes.fromhex("1a45dfa39f4286810142f7810142f2810442f381084282") + b"webm" + bytes(64)
BAD_KEYS = [
    "", "../escape", "audio/../../etc/passwd", "/abs/path", "audio//x", "audio/.hidden", ".env",
    "audio\\x", "audio/x\x00", "a/b/", "a/..", "audio/x y", "x" * 201,
]


@pytest.fixture
def local(tmp_path: Path) -> LocalMediaStorage:
    return LocalMediaStorage(tmp_path / "media", "http://localhost:3000/media/")


@pytest.fixture
def fake() -> Iterator[FakeCloudinary]:
    with FakeCloudinary() as server:
        yield server


@pytest.fixture
def cloud(fake: FakeCloudinary) -> CloudinaryMediaStorage:
    return CloudinaryMediaStorage(fake.cloudinary_url, timeout_s=2.0)


def http_get(url: str) -> bytes:
    assert url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - local fake only
        return bytes(response.read())


# -- the interface ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [LocalMediaStorage, CloudinaryMediaStorage])
def test_both_storages_satisfy_the_protocol(
    cls: type, local: LocalMediaStorage, cloud: CloudinaryMediaStorage
) -> None:
    instance = local if cls is LocalMediaStorage else cloud
    assert isinstance(instance, MediaStorage)
    for name in ("save", "delete", "read"):
        expected = inspect.signature(getattr(MediaStorage, name))
        actual = inspect.signature(getattr(cls, name))
        assert list(actual.parameters) == list(expected.parameters), name
        assert actual.return_annotation == expected.return_annotation, name


def test_build_storage_picks_the_implementation(tmp_path: Path, fake: FakeCloudinary) -> None:
    assert isinstance(build_storage(None, tmp_path, "http://x/media"), LocalMediaStorage)
    assert isinstance(build_storage("  ", tmp_path, "http://x/media"), LocalMediaStorage)
    cloud = build_storage(fake.cloudinary_url, tmp_path, "http://x/media", timeout_s=3)
    assert isinstance(cloud, CloudinaryMediaStorage)
    assert cloud.upload_prefix == fake.upload_prefix  # from the URL's ?upload_prefix=
    assert cloud.timeout_s == 3


def test_importing_the_package_reads_no_env_and_loads_no_sdk() -> None:
    code = "import sys, agents.media; assert 'cloudinary' not in sys.modules, 'SDK imported'"
    env = {**os.environ, "CLOUDINARY_URL": "not-a-cloudinary-url"}  # the SDK would raise on it
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=60)


# -- local --------------------------------------------------------------------------------------


def test_local_round_trip(local: LocalMediaStorage) -> None:
    data = png_bytes()
    stored = local.save("illustrations/job-1", data, "image/png")
    assert stored.url == "http://localhost:3000/media/illustrations/job-1.png"
    assert stored.public_id == "illustrations/job-1"
    assert stored.size == len(data)
    assert stored.mime_type == "image/png"
    assert local.read("illustrations/job-1") == data
    path = local.resolve("illustrations/job-1.png")
    assert path is not None and path.read_bytes() == data
    assert LocalMediaStorage.mime_type_of(path) == "image/png"


def test_local_save_normalizes_mime_and_names_the_file_after_it(local: LocalMediaStorage) -> None:
    stored = local.save("audio/abc", WEBM_AUDIO, "audio/webm;codecs=opus")
    assert stored.mime_type == "audio/webm"
    assert stored.url.endswith("/audio/abc.webm")


def test_local_overwrite_is_idempotent(local: LocalMediaStorage) -> None:
    first = local.save("illustrations/job-1", png_bytes("red"), "image/png")
    second = local.save("illustrations/job-1", png_bytes("blue"), "image/png")
    assert first.url == second.url
    files = sorted(p.name for p in (local.media_dir / "illustrations").iterdir())
    assert files == ["job-1.png"]  # no duplicates and no leftover temp files
    assert local.read("illustrations/job-1") == png_bytes("blue")


def test_local_overwrite_with_another_type_leaves_one_file(local: LocalMediaStorage) -> None:
    local.save("illustrations/job-1", png_bytes(), "image/png")
    jpeg = io.BytesIO()
    Image.new("RGB", (2, 2)).save(jpeg, "JPEG")
    stored = local.save("illustrations/job-1", jpeg.getvalue(), "image/jpeg")
    assert stored.url.endswith("job-1.jpg")
    assert [p.name for p in (local.media_dir / "illustrations").iterdir()] == ["job-1.jpg"]
    assert local.read("illustrations/job-1") == jpeg.getvalue()


def test_local_delete_and_missing(local: LocalMediaStorage) -> None:
    local.save("audio/abc", WEBM_AUDIO, "audio/webm")
    local.delete("audio/abc")
    local.delete("audio/abc")  # missing is not an error
    assert local.resolve("audio/abc.webm") is None
    with pytest.raises(MediaError) as err:
        local.read("audio/abc")
    assert err.value.code == "not_found" and not err.value.retryable


@pytest.mark.parametrize("key", BAD_KEYS)
def test_local_refuses_keys_that_could_escape(local: LocalMediaStorage, key: str) -> None:
    for call in (
        lambda: local.save(key, b"x", "image/png"),
        lambda: local.delete(key),
        lambda: local.read(key),
    ):
        with pytest.raises(MediaError) as err:
            call()
        assert err.value.code == "invalid_key" and not err.value.retryable
    assert not (local.media_dir.parent / "escape.png").exists()


@pytest.mark.parametrize(
    "path",
    ["../secret.txt", "audio/../../secret.txt", "/etc/passwd", "audio/.tmp-x.png", "audio\\abc.png",
     "audio/missing.png", "audio", "", "%2e%2e/secret.txt"],
)
def test_resolve_refuses_traversal_and_missing(local: LocalMediaStorage, path: str) -> None:
    (local.media_dir.parent / "secret.txt").parent.mkdir(parents=True, exist_ok=True)
    (local.media_dir.parent / "secret.txt").write_text("s3cret")
    local.save("audio/abc", WEBM_AUDIO, "audio/webm")
    (local.media_dir / "audio" / ".tmp-x.png").write_bytes(b"partial")
    assert local.resolve(path) is None


def test_resolve_refuses_symlinks_out_of_the_media_dir(local: LocalMediaStorage) -> None:
    outside = local.media_dir.parent / "outside.png"
    outside.write_bytes(png_bytes())
    (local.media_dir / "illustrations").mkdir(parents=True)
    (local.media_dir / "illustrations" / "link.png").symlink_to(outside)
    assert local.resolve("illustrations/link.png") is None


def test_local_repr_has_no_url_secrets(local: LocalMediaStorage) -> None:
    assert "LocalMediaStorage" in repr(local)


# -- Cloudinary, real SDK against the fake ------------------------------------------------------


def test_cloudinary_upload_image(cloud: CloudinaryMediaStorage, fake: FakeCloudinary) -> None:
    data = png_bytes()
    stored = cloud.save("illustrations/job-1", data, "image/png")
    assert stored.public_id == "illustrations/job-1"
    assert stored.size == len(data)
    assert stored.mime_type == "image/png"
    assert stored.url.startswith(f"{fake.upload_prefix}/fake-cloud/image/upload/v")
    assert stored.url.endswith("/illustrations/job-1.png")
    assert stored.extra["width"] == 4 and stored.extra["height"] == 3
    assert http_get(stored.url) == data
    record = fake.uploads[-1]
    assert record.params["overwrite"] == "1" and record.params["public_id"] == "illustrations/job-1"
    assert fake.requests[-2] == ("POST", "/v1_1/fake-cloud/image/upload")


def test_cloudinary_audio_goes_to_the_video_resource_type(
    cloud: CloudinaryMediaStorage, fake: FakeCloudinary
) -> None:
    stored = cloud.save("audio/abc", WEBM_AUDIO, "audio/webm;codecs=opus")
    assert stored.mime_type == "audio/webm"
    assert stored.extra["resource_type"] == "video"
    assert "/fake-cloud/video/upload/" in stored.url
    assert fake.asset("audio/abc", "video") is not None
    assert cloud.read("audio/abc") == WEBM_AUDIO


def test_cloudinary_overwrite_keeps_one_object(
    cloud: CloudinaryMediaStorage, fake: FakeCloudinary
) -> None:
    first = cloud.save("illustrations/job-1", png_bytes("red"), "image/png")
    second = cloud.save("illustrations/job-1", png_bytes("blue"), "image/png")
    assert fake.upload_count("illustrations/job-1") == 2
    assert len(fake.assets) == 1
    assert first.public_id == second.public_id
    # Cloudinary bumps the version segment (cache busting); the rest of the URL is stable.
    assert first.url.rsplit("/v", 1)[0] == second.url.rsplit("/v", 1)[0]
    assert first.url.split("/", 8)[-1] == second.url.split("/", 8)[-1]
    assert http_get(second.url) == png_bytes("blue")
    assert cloud.read("illustrations/job-1") == png_bytes("blue")


def test_cloudinary_delete(cloud: CloudinaryMediaStorage, fake: FakeCloudinary) -> None:
    cloud.save("audio/abc", WEBM_AUDIO, "audio/webm")
    cloud.delete("audio/abc")
    assert fake.asset("audio/abc") is None
    cloud.delete("audio/abc")  # missing is not an error
    with pytest.raises(MediaError) as err:
        cloud.read("audio/abc")
    assert err.value.code == "not_found" and not err.value.retryable


def test_cloudinary_timeout_is_honoured(fake: FakeCloudinary) -> None:
    cloud = CloudinaryMediaStorage(fake.cloudinary_url, timeout_s=0.3)
    fake.hang_next(10)
    started = time.monotonic()
    with pytest.raises(MediaError) as err:
        cloud.save("illustrations/job-1", png_bytes(), "image/png")
    assert time.monotonic() - started < 3
    assert err.value.code == "timeout" and err.value.retryable


def test_cloudinary_latency_within_timeout_succeeds(fake: FakeCloudinary) -> None:
    fake.latency = 0.2
    cloud = CloudinaryMediaStorage(fake.cloudinary_url, timeout_s=2)
    assert cloud.save("illustrations/job-1", png_bytes(), "image/png").public_id


@pytest.mark.parametrize(
    ("status", "body", "code", "retryable"),
    [
        (500, None, "unavailable", True),
        (503, None, "unavailable", True),
        (502, b"<html><body>502 Bad Gateway</body></html>", "unavailable", True),
        (429, None, "rate_limited", True),
        (420, None, "rate_limited", True),
        (400, None, "rejected", False),
        (401, None, "unauthorized", False),
        (403, None, "unauthorized", False),
    ],
)
def test_cloudinary_http_errors_map_to_media_errors(
    cloud: CloudinaryMediaStorage,
    fake: FakeCloudinary,
    status: int,
    body: bytes | None,
    code: str,
    retryable: bool,
) -> None:
    fake.fail_next(1, status, body)
    with pytest.raises(MediaError) as err:
        cloud.save("illustrations/job-1", png_bytes(), "image/png")
    assert (err.value.code, err.value.retryable) == (code, retryable)
    assert f"HTTP {status}" in err.value.message
    assert "Bad Gateway" not in err.value.message  # response bodies are not echoed
    # The fault was one-shot: the retry succeeds and still yields one object.
    cloud.save("illustrations/job-1", png_bytes(), "image/png")
    assert len(fake.assets) == 1


def test_cloudinary_rejects_invalid_content_without_retry(cloud: CloudinaryMediaStorage) -> None:
    with pytest.raises(MediaError) as err:
        cloud.save("illustrations/job-1", b"not an image", "image/png")
    assert err.value.code == "rejected" and not err.value.retryable
    assert "Invalid image file" in err.value.message


def test_cloudinary_unreachable_is_retryable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again before use: nothing listens there
    cloud = CloudinaryMediaStorage(
        "cloudinary://key:secret@demo", timeout_s=1, upload_prefix=f"http://127.0.0.1:{port}"
    )
    with pytest.raises(MediaError) as err:
        cloud.save("illustrations/job-1", png_bytes(), "image/png")
    assert err.value.code == "unavailable" and err.value.retryable


def test_secret_never_appears_in_errors_or_repr(fake: FakeCloudinary) -> None:
    secret = fake.api_secret
    wrong = fake.cloudinary_url.replace(secret, "wrong-secret-value")
    messages: list[str] = []
    for storage, prepare in [
        (CloudinaryMediaStorage(wrong, timeout_s=2), lambda: None),
        (CloudinaryMediaStorage(fake.cloudinary_url, timeout_s=0.3), lambda: fake.hang_next(5)),
        (CloudinaryMediaStorage(fake.cloudinary_url, timeout_s=2), lambda: fake.fail_next(1, 500)),
        (CloudinaryMediaStorage(fake.cloudinary_url, timeout_s=2),
         lambda: fake.fail_next(1, 502, secret.encode())),
    ]:
        prepare()
        with pytest.raises(MediaError) as err:
            storage.save("illustrations/job-1", png_bytes(), "image/png")
        messages += [str(err.value), repr(err.value), repr(storage)]
    assert any("HTTP 401" in m and "Invalid Signature" in m for m in messages)
    for message in messages:
        assert secret not in message and "wrong-secret-value" not in message
        assert "cloudinary://" not in message


@pytest.mark.parametrize(
    "url",
    ["https://key:topsecret@demo", "cloudinary://key@demo", "cloudinary://:topsecret@demo",
     "cloudinary://key:topsecret@", "topsecret"],
)
def test_bad_cloudinary_url_errors_do_not_echo_it(url: str) -> None:
    with pytest.raises(ValueError) as err:
        CloudinaryMediaStorage(url)
    assert "topsecret" not in str(err.value)


def test_explicit_upload_prefix_beats_the_url(fake: FakeCloudinary) -> None:
    url = f"cloudinary://{fake.api_key}:{fake.api_secret}@{fake.cloud_name}?upload_prefix=http://nowhere.invalid"
    cloud = CloudinaryMediaStorage(url, timeout_s=2, upload_prefix=fake.upload_prefix)
    assert cloud.save("illustrations/job-1", png_bytes(), "image/png").public_id


def test_sdk_global_config_is_neither_used_nor_changed(
    fake: FakeCloudinary, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cloudinary

    poisoned = cloudinary.Config()
    poisoned.update(
        cloud_name="global-cloud", api_key="global-key", api_secret="global-secret",
        upload_prefix="http://nowhere.invalid", oauth_token="global-token", upload_preset="preset",
    )
    monkeypatch.setattr(cloudinary, "_config", poisoned)
    cloud = CloudinaryMediaStorage(fake.cloudinary_url, timeout_s=2)
    stored = cloud.save("illustrations/job-1", png_bytes(), "image/png")
    assert cloud.read("illustrations/job-1") == png_bytes()
    cloud.delete("illustrations/job-1")
    assert stored.url.startswith(fake.upload_prefix)
    assert "upload_preset" not in fake.uploads[-1].params
    assert cloudinary.config().cloud_name == "global-cloud"
    assert cloudinary.config().api_key == "global-key"


def test_cloudinary_rejects_unsafe_keys_without_calling_out(
    cloud: CloudinaryMediaStorage, fake: FakeCloudinary
) -> None:
    for key in BAD_KEYS:
        with pytest.raises(MediaError):
            cloud.save(key, png_bytes(), "image/png")
    assert fake.requests == []


def test_cloudinary_refuses_empty_files(
    cloud: CloudinaryMediaStorage, fake: FakeCloudinary
) -> None:
    with pytest.raises(MediaError) as err:
        cloud.save("audio/abc", b"", "audio/webm")
    assert err.value.code == "rejected"
    assert fake.requests == []
