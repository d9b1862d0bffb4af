"""The film renderer with a real ffmpeg: what comes out (ffprobe), and what happens under trouble.

Most films here are small (320x180) and a few seconds long; one is rendered at the default
1280x720. Media are made on the spot: photos by Pillow, speech by espeak-ng, clips by ffmpeg.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from agents.errors import AgentError
from agents.film import (
    FfmpegInfo,
    FilmInput,
    FilmSettings,
    RenderLimits,
    RenderStopped,
    SceneInput,
    ffmpeg_info,
    pick_music,
    render_film,
)
from agents.film.inputs import parse_clip_info
from agents.film.parallel import Run, run_all
from agents.film.subtitles import MAX_CUE_CHARS, MAX_LINE_CHARS, split_text, timed_cues, to_webvtt
from agents.film.timeline import (
    LEAD_SECONDS,
    MIN_IMAGE_SECONDS,
    TAIL_SECONDS,
    plan_timeline,
)
from tests.audio import need_tool
from tests.film_media import clip, photo, png_bomb, spoken, tone

AIR = LEAD_SECONDS + TAIL_SECONDS


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | float]:
    root = tmp_path_factory.mktemp("film-media")
    return {
        "photo1": photo(root / "one.jpg", (800, 600), seed=1),
        "photo2": photo(root / "two.jpg", (900, 600), seed=2),
        "speech1": root / "speech1.wav",
        "speech1_s": spoken(root / "speech1.wav", "The sun sets over the river."),
        "speech2": root / "speech2.wav",
        "speech2_s": spoken(root / "speech2.wav", "Next morning we took the train to the sea."),
        "root": root,
    }


def ffprobe(path: Path) -> dict:
    done = subprocess.run(
        [need_tool("ffprobe"), "-v", "error", "-print_format", "json", "-show_streams",
         "-show_format", str(path)], capture_output=True, text=True, check=True, timeout=60)
    return json.loads(done.stdout)


def volume(path: Path, start: float = 0.0, seconds: float | None = None,
           extra: str = "") -> tuple[float, float]:
    """Mean and max volume (dB) of the audio, optionally a window and a filter before."""
    window = ["-ss", f"{start}", *(["-t", f"{seconds}"] if seconds else [])]
    chain = f"{extra},volumedetect" if extra else "volumedetect"
    done = subprocess.run(
        [need_tool("ffmpeg"), "-hide_banner", *window, "-i", str(path), "-map", "0:a",
         "-af", chain, "-f", "null", "-"], capture_output=True, text=True, check=True, timeout=60)
    mean = re.search(r"mean_volume: (-?[\d.]+|-inf) dB", done.stderr)
    peak = re.search(r"max_volume: (-?[\d.]+|-inf) dB", done.stderr)
    assert mean and peak, done.stderr[-500:]
    return float(mean.group(1)), float(peak.group(1))


def frame_at(path: Path, seconds: float, out: Path) -> Image.Image:
    subprocess.run([need_tool("ffmpeg"), "-v", "error", "-ss", f"{seconds}", "-i", str(path),
                    "-frames:v", "1", "-y", str(out)], check=True, timeout=60)
    return Image.open(out).convert("RGB")


def processes_in(folder: Path) -> list[str]:
    """Command lines of the processes whose working directory is inside ``folder``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if cwd.startswith(str(folder)):
            found.append(cmdline)
    return found


def scene(chapter: str, images: tuple[Path, ...] = (), narration: Path | None = None,
          seconds: float = 1.0, text: str = "", transition: str = "fade") -> SceneInput:
    return SceneInput(chapter, images, narration, seconds, text, transition)


def small(*scenes: SceneInput, intro_clip: Path | None = None,
          music: Path | None = None) -> FilmInput:
    """A 320x180 film: quick to render."""
    return FilmInput(scenes, intro_clip=intro_clip, music=music, width=320, height=180)


def long_film(media: dict) -> FilmInput:
    """Half a minute at 1280x720: several seconds of ffmpeg work to interrupt."""
    images = (media["photo1"], media["photo2"])
    return FilmInput(tuple(scene(f"c{n}", images, seconds=8.0) for n in range(4)))


# --- what comes out --------------------------------------------------------------------------


def test_a_narrated_film_has_the_streams_codecs_and_length_asked_for(
    media: dict, tmp_path: Path
) -> None:
    text1 = "The sun sets over the river."
    text2 = "Next morning we took the train to the sea."
    film = FilmInput((
        scene("ch-1", (media["photo1"],), media["speech1"], media["speech1_s"], text1),
        scene("ch-2", (media["photo1"], media["photo2"]), media["speech2"], media["speech2_s"],
              text2, "slide"),
    ))
    progress: list[float] = []
    result = render_film(film, tmp_path / "work", on_progress=progress.append)

    info = ffprobe(result.video)
    kinds = {s["codec_type"]: s for s in info["streams"]}
    video, audio, subs = kinds["video"], kinds["audio"], kinds["subtitle"]
    assert (video["codec_name"], video["width"], video["height"]) == ("h264", 1280, 720)
    assert (video["pix_fmt"], video["r_frame_rate"]) == ("yuv420p", "30/1")
    assert (audio["codec_name"], int(audio["sample_rate"]), audio["channels"]) == ("aac", 48000, 2)
    assert subs["codec_name"] == "mov_text"
    expected = sum(max(3.0, s.narration_seconds + AIR) for s in film.scenes)
    assert abs(float(info["format"]["duration"]) - expected) < 1.0
    assert abs(result.duration_seconds - expected) < 0.05
    assert (result.width, result.height) == (1280, 720)
    assert result.size_bytes == result.video.stat().st_size
    assert result.has_narration and not result.has_music
    # +faststart: the index comes before the media data.
    head = result.video.read_bytes()[:200_000]
    assert 0 <= head.find(b"moov") < head.find(b"mdat") or b"mdat" not in head

    spans = result.scenes
    assert [s.chapter_id for s in spans] == ["ch-1", "ch-2"]
    assert spans[0].start_seconds == 0 and spans[0].end_seconds == spans[1].start_seconds
    assert spans[-1].end_seconds == pytest.approx(result.duration_seconds, abs=0.01)
    mean, peak = volume(result.video)
    assert mean > -45 and peak > -20  # someone speaks

    vtt = result.subtitles.read_text()
    assert vtt.startswith("WEBVTT\n")
    cues = re.findall(r"(\d\d:\d\d:\d\d\.\d{3}) --> (\d\d:\d\d:\d\d\.\d{3})\n(.+?)(?:\n\n|\n?$)",
                      vtt, re.S)
    assert " ".join(" ".join(c[2].split()) for c in cues) == f"{text1} {text2}"
    parsed = subprocess.run(
        [need_tool("ffprobe"), "-v", "error", "-f", "webvtt", "-print_format", "json",
         "-show_packets", str(result.subtitles)], capture_output=True, text=True, check=True)
    assert len(json.loads(parsed.stdout)["packets"]) == len(cues)
    assert cues[0][0] == "00:00:00.600"  # the narration starts after the lead-in

    with Image.open(result.poster) as poster:
        assert (poster.format, poster.size) == ("JPEG", (1280, 720))
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == [
        "film.mp4", "poster.jpg", "subtitles.vtt"]
    assert progress == sorted(progress) and progress[-1] == 1.0 and len(progress) > 1


def test_music_loops_under_the_film_and_ducks_under_the_voice(tmp_path: Path) -> None:
    # Music: a 220 Hz tone shorter than the film (it must loop). Voice: a 3 kHz tone. A
    # low-pass keeps the music alone, so its level can be read with and without the voice.
    music = tmp_path / "bed.wav"
    tone(music, 1.5, 220.0)
    voice = tmp_path / "voice.wav"
    tone(voice, 3.0, 3000.0)
    film = small(scene("quiet", seconds=3.0), scene("spoken", narration=voice, seconds=3.0),
                 music=music)
    result = render_film(film, tmp_path / "work")
    assert result.has_music
    spoken_at = result.scenes[1].start_seconds + LEAD_SECONDS
    music_alone, _ = volume(result.video, 2.0, 1.0, "lowpass=f=500,lowpass=f=500")
    under_voice, _ = volume(result.video, spoken_at + 0.8, 1.5, "lowpass=f=500,lowpass=f=500")
    assert music_alone > -40  # still playing after its 1.5 s: looped
    assert under_voice < music_alone - 6  # ducked


def test_with_neither_music_nor_voice_the_film_is_silent(media: dict, tmp_path: Path) -> None:
    film = small(scene("a", (media["photo1"],), seconds=2.0, text="Words"))
    result = render_film(film, tmp_path / "work")
    assert not result.has_music and not result.has_narration
    assert volume(result.video)[1] < -80
    assert result.subtitles.read_text().count("-->") == 1


def test_the_intro_clip_plays_first_and_a_scene_without_pictures_is_plain(
    tmp_path: Path,
) -> None:
    intro = clip(tmp_path / "intro.mp4", 2.0, "640x480")  # 4:3, with a 1 kHz tone
    film = small(scene("bare", seconds=3.0), intro_clip=intro)
    result = render_film(film, tmp_path / "work")
    assert result.scenes[0].start_seconds == pytest.approx(2.0, abs=0.05)
    assert result.duration_seconds == pytest.approx(2.0 + 3.0 + AIR, abs=0.05)
    assert volume(result.video, 0.2, 1.5)[0] > -40  # the intro's own sound
    assert volume(result.video, 3.0)[1] < -80  # then the silent scene
    first = frame_at(result.video, 0.5, tmp_path / "intro.png")
    assert max(first.getpixel((3, 90))) < 30  # type: ignore[arg-type]  # pillar-boxed
    assert max(first.getpixel((160, 90))) > 60  # type: ignore[arg-type]  # the test pattern
    plain = frame_at(result.video, 4.0, tmp_path / "plain.png")
    for xy in ((10, 10), (160, 90), (300, 170)):
        pixel = plain.getpixel(xy)
        assert isinstance(pixel, tuple)
        assert all(abs(a - b) < 10 for a, b in zip(pixel, (0x14, 0x14, 0x1C), strict=True))


def test_the_bundled_ffmpeg_renders_too(media: dict, tmp_path: Path) -> None:
    bundled = ffmpeg_info("bundled")
    assert bundled.source == "imageio-ffmpeg" and re.match(r"n?\d", bundled.version)
    film = small(scene("a", (media["photo1"],), media["speech1"], media["speech1_s"],
                       "The sun sets."))
    result = render_film(film, tmp_path / "work", ffmpeg=bundled)
    info = ffprobe(result.video)
    assert {s["codec_name"] for s in info["streams"]} == {"h264", "aac", "mov_text"}
    assert result.ffmpeg_version == bundled.version


def test_a_film_at_the_scene_limit_renders_within_the_default_caps(
    media: dict, tmp_path: Path
) -> None:
    # 60 scenes and 60 narrations: as many inputs as ffmpeg will ever get, in many segments,
    # under the default memory cap.
    voice = tmp_path / "voice.wav"
    tone(voice, 1.4, 500.0)
    scenes = [scene(f"c{n}", (media["photo1"], media["photo2"]), voice, 1.4, "Words.",
                    ("fade", "slide", "zoom")[n % 3]) for n in range(60)]
    result = render_film(FilmInput(tuple(scenes), width=160, height=90), tmp_path / "work")
    assert len(result.scenes) == 60
    assert result.duration_seconds == pytest.approx(60 * (1.4 + AIR), abs=0.1)
    assert abs(float(ffprobe(result.video)["format"]["duration"]) - result.duration_seconds) < 1


def test_segments_join_without_a_seam(
    media: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same film encoded whole and in segments of two clips (cut inside transitions and
    # fades): frame for frame the same picture, up to encoding noise.
    film = small(*(scene(f"c{n}", (media["photo1"], media["photo2"]), seconds=5.0,
                         transition=("slide", "zoom", "fade")[n]) for n in range(3)))
    whole = render_film(film, tmp_path / "whole")
    monkeypatch.setattr("agents.film.graph.CLIPS_PER_SEGMENT", 2)
    cut = render_film(film, tmp_path / "cut")
    assert ffprobe(cut.video)["streams"][0]["nb_frames"] == ffprobe(whole.video)["streams"][0][
        "nb_frames"]
    compared = subprocess.run(
        [need_tool("ffmpeg"), "-hide_banner", "-i", str(whole.video), "-i", str(cut.video),
         "-lavfi", "[0:v][1:v]psnr", "-f", "null", "-"],
        capture_output=True, text=True, check=True, timeout=60)
    worst = re.search(r"PSNR .* min:([\d.]+|inf)", compared.stderr)
    assert worst and float(worst.group(1)) > 30, compared.stderr[-300:]


# --- trouble ---------------------------------------------------------------------------------


def test_cancel_mid_render_kills_ffmpeg_and_leaves_nothing(media: dict, tmp_path: Path) -> None:
    work = tmp_path / "work"
    started: list[float] = []

    def should_stop() -> bool:
        return bool(started) and processes_in(work) != []

    with pytest.raises(RenderStopped):
        render_film(long_film(media), work, on_progress=lambda f: started.append(f),
                    should_stop=should_stop)
    assert started and started[-1] < 1.0
    assert processes_in(work) == []
    assert list(work.iterdir()) == []


def test_the_wall_clock_limit_kills_a_slow_render(media: dict, tmp_path: Path) -> None:
    work = tmp_path / "work"
    began = time.monotonic()
    with pytest.raises(AgentError) as caught:
        render_film(long_film(media), work, limits=RenderLimits(wall_seconds=1.0))
    assert caught.value.code == "render_timeout"
    assert time.monotonic() - began < 20
    assert processes_in(work) == []
    assert list(work.iterdir()) == []


def test_the_memory_cap_applies_to_ffmpeg(media: dict, tmp_path: Path) -> None:
    film = small(scene("a", (media["photo1"],), seconds=1.0))
    with pytest.raises(AgentError) as caught:
        render_film(film, tmp_path / "work", limits=RenderLimits(memory_bytes=48 * 1024**2))
    assert caught.value.code == "render_failed"
    assert list((tmp_path / "work").iterdir()) == []


def test_a_killed_worker_leaves_no_ffmpeg_and_a_retry_starts_clean(
    media: dict, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    script = textwrap.dedent(f"""
        from pathlib import Path
        from agents.film import FilmInput, SceneInput, render_film
        images = (Path({str(media["photo1"])!r}), Path({str(media["photo2"])!r}))
        scenes = tuple(SceneInput(f"c{{n}}", images, None, 8.0, "", "fade") for n in range(4))
        render_film(FilmInput(scenes), Path({str(work)!r}))
    """)
    worker = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parent.parent)
    try:
        deadline = time.monotonic() + 60
        while not any("ffmpeg" in cmd for cmd in processes_in(work)):
            assert worker.poll() is None and time.monotonic() < deadline, "no ffmpeg started"
            time.sleep(0.05)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        deadline = time.monotonic() + 5
        while processes_in(work) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes_in(work) == []
    finally:
        if worker.poll() is None:
            worker.kill()
    assert [p.name.startswith(".render-") for p in work.iterdir()] == [True]  # its scratch
    film = small(scene("a", (media["photo1"],), seconds=1.0))
    render_film(film, work)
    assert sorted(p.name for p in work.iterdir()) == ["film.mp4", "poster.jpg", "subtitles.vtt"]


@pytest.mark.parametrize("bad", ["huge", "bomb", "text", "truncated"])
def test_a_hostile_photo_fails_its_scene_with_a_clear_code(
    media: dict, tmp_path: Path, bad: str
) -> None:
    path = tmp_path / f"{bad}.png"
    if bad == "huge":
        png_bomb(path, 40_000, 40_000, rows=1)
    elif bad == "bomb":
        png_bomb(path, 11_000, 11_000)
    elif bad == "text":
        path.write_text("#EXTM3U\nfile:///etc/passwd\n")
    else:
        path.write_bytes(Path(media["photo1"]).read_bytes()[:4000])
    film = small(scene("fine", (media["photo1"],)), scene("bad-one", (path,)))
    with pytest.raises(AgentError) as caught:
        render_film(film, tmp_path / "work")
    assert caught.value.code == "media_rejected" and not caught.value.retryable
    assert caught.value.message.startswith("Scene 2 (chapter bad-one): Image")
    assert list((tmp_path / "work").iterdir()) == []


def test_audio_that_is_no_known_format_is_refused(media: dict, tmp_path: Path) -> None:
    playlist = tmp_path / "narration.mp3"
    playlist.write_text("#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n")
    film = small(scene("a", narration=playlist, seconds=1.0))
    with pytest.raises(AgentError) as caught:
        render_film(film, tmp_path / "work")
    assert caught.value.code == "media_rejected"
    assert "Scene 1 (chapter a): the narration" in caught.value.message
    with pytest.raises(AgentError) as caught:
        render_film(small(scene("a"), intro_clip=playlist), tmp_path / "work")
    assert caught.value.code == "media_rejected"


@pytest.mark.parametrize(
    ("film", "words"),
    [
        (FilmInput(tuple(scene(f"c{n}") for n in range(61))), "at most 60 scenes"),
        (FilmInput((scene("a", seconds=500.0), scene("b", seconds=420.0))), "limit is 900 s"),
        (FilmInput((scene("a", transition="wipe"),)), "Unknown transition"),
        (FilmInput((scene("a"),), width=321), "even"),
        (FilmInput(()), "at least one scene"),
    ],
    ids=["61-scenes", "over-15-minutes", "transition", "odd-frame", "empty"],
)
def test_limits_are_refused_before_any_work(film: FilmInput, words: str, tmp_path: Path) -> None:
    with pytest.raises(AgentError) as caught:
        render_film(film, tmp_path / "work")
    assert caught.value.code == "invalid_input" and words in caught.value.message
    assert not (tmp_path / "work").exists()


# --- the parts -------------------------------------------------------------------------------


def test_the_timeline_counts_whole_frames_and_shares_a_scene_between_its_pictures() -> None:
    pictures = tuple(Path(f"p{k}.jpg") for k in range(8))
    film = FilmInput((scene("a", pictures, Path("a.wav"), 10.0),
                      scene("b", pictures[:1], Path("b.wav"), 0.5)))
    timeline = plan_timeline(film, RenderLimits(max_images_per_scene=6), intro_seconds=2.0)
    first, second = timeline.scenes
    assert timeline.intro_frames == 60 and first.start_frame == 60
    assert first.frames == round((10.0 + AIR) * 30) and second.frames == 90  # 3 s minimum
    assert timeline.total_frames == 60 + first.frames + second.frames
    # 11.6 s + the next transition (0.8 s), each picture 3 s at least: 4 of the 8 are shown.
    shown = first.frames + timeline.transition_frames
    assert len(first.clip_frames) == shown // round(MIN_IMAGE_SECONDS * 30) == 4
    assert sum(first.clip_frames) - (len(first.clip_frames) - 1) * timeline.image_fade_frames \
        == shown
    assert first.voice_start == pytest.approx(2.0 + LEAD_SECONDS)
    assert first.voice_end == pytest.approx(2.0 + LEAD_SECONDS + 10.0)
    assert timeline.samples(timeline.total_frames) == timeline.total_frames * 1600


def test_subtitle_cues_are_readable_and_fill_the_narration() -> None:
    text = ("We left at dawn. " + "The road wound through olive groves, past villages, "
            "along a river that glittered in the low sun, and finally down to the harbour "
            "where the boats were waiting. Then <nothing> & silence.")
    chunks = split_text(text)
    assert chunks[0] == "We left at dawn."
    assert all(len(chunk) <= MAX_CUE_CHARS for chunk in chunks)
    cues = timed_cues(text, 10.0, 25.0)
    assert cues[0].start == 10.0 and cues[-1].end == pytest.approx(25.0)
    assert all(a.end == b.start for a, b in itertools.pairwise(cues))
    assert all(len(line) <= MAX_LINE_CHARS + 10 for cue in cues for line in cue.text.split("\n"))
    assert all(cue.text.count("\n") <= 1 for cue in cues)
    vtt = to_webvtt(cues)
    assert "&lt;nothing&gt; &amp; silence." in vtt and "<nothing>" not in vtt
    assert len(timed_cues(text, 0.0, 2.0)) == 1  # no cue flashes by: merged into one
    assert timed_cues("   ", 0.0, 5.0) == []


def test_music_is_picked_by_mood_from_the_library(tmp_path: Path) -> None:
    for mood, names in {"calm": ["b.mp3", "a.ogg", ".hidden.mp3", "notes.txt"],
                        "neutral": ["n.wav"]}.items():
        (tmp_path / mood).mkdir()
        for name in names:
            (tmp_path / mood / name).write_bytes(b"x")
    picked = {pick_music(tmp_path, "calm", seed=str(n)) for n in range(20)}
    assert picked == {tmp_path / "calm" / "a.ogg", tmp_path / "calm" / "b.mp3"}
    assert pick_music(tmp_path, "calm", seed="v1") == pick_music(tmp_path, "calm", seed="v1")
    assert pick_music(tmp_path, "dramatic") == tmp_path / "neutral" / "n.wav"
    assert pick_music(tmp_path, "no-such-mood") == tmp_path / "neutral" / "n.wav"
    assert pick_music(None, "calm") is None
    assert pick_music(tmp_path / "missing", "calm") is None


def test_which_ffmpeg_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = ffmpeg_info()
    assert system.source == "system" and system.path == need_tool("ffmpeg")
    assert system.to_dict()["version"] == system.version
    monkeypatch.setenv("PATH", str(tmp_path))  # a machine with no system ffmpeg
    ffmpeg_info.cache_clear()
    try:
        assert ffmpeg_info().source == "imageio-ffmpeg"
    finally:
        ffmpeg_info.cache_clear()
    with pytest.raises(AgentError) as caught:
        ffmpeg_info(str(tmp_path / "nothing-here"))
    assert caught.value.code == "render_unavailable"
    # The filter graph's file is named the way each generation of ffmpeg reads it (both are
    # exercised for real: the system's 5.x by most renders here, the wheel's 9.x by one).
    assert FfmpegInfo("f", "system", "5.1.9-0+deb12u1").filter_graph_file("g") == [
        "-filter_complex_script", "g"]
    assert FfmpegInfo("f", "imageio-ffmpeg", "n9.0.2-17-g2a571b6").filter_graph_file("g") == [
        "-/filter_complex", "g"]
    assert FfmpegInfo("f", "FFMPEG_BINARY", "N-113722-gabcdef").major is None


def test_settings_from_the_environment(tmp_path: Path) -> None:
    default = FilmSettings.from_env({})
    assert default.ffmpeg_binary is None and default.music_library_dir is None
    assert default.limits == RenderLimits()
    settings = FilmSettings.from_env({
        "FFMPEG_BINARY": "bundled", "MUSIC_LIBRARY_DIR": str(tmp_path),
        "FILM_RENDER_WALL_SECONDS": "120", "FILM_RENDER_MEMORY_MB": "512",
    })
    assert settings.ffmpeg_binary == "bundled" and settings.music_library_dir == tmp_path
    assert settings.limits.wall_seconds == 120 and settings.limits.memory_bytes == 512 * 1024**2
    with pytest.raises(ValueError, match="FILM_RENDER_MEMORY_MB"):
        FilmSettings.from_env({"FILM_RENDER_MEMORY_MB": "lots"})


def test_parallel_runs_report_and_stop_from_the_calling_thread() -> None:
    caller = threading.current_thread()
    seen: list[tuple[float, bool]] = []
    stopped_by_failure: list[bool] = []

    def slow(progress: Callable[[float], None], stopping: Callable[[], bool]) -> None:
        for step in range(1, 200):
            if stopping():
                stopped_by_failure.append(True)
                raise RenderStopped("stopping")
            progress(step / 200)
            time.sleep(0.01)

    def failing(progress: Callable[[float], None], stopping: Callable[[], bool]) -> None:
        time.sleep(0.3)
        raise AgentError("render_failed", "boom", retryable=False)

    with pytest.raises(AgentError, match="boom"):
        run_all([Run(slow, 1.0), Run(failing, 1.0)], workers=2,
                on_progress=lambda f: seen.append((f, threading.current_thread() is caller)))
    assert stopped_by_failure == [True]  # the failure stopped the other run
    assert seen and all(in_caller for _, in_caller in seen)
    assert [f for f, _ in seen] == sorted(f for f, _ in seen)

    asked: list[bool] = []

    def should_stop() -> bool:
        asked.append(threading.current_thread() is caller)
        return True

    with pytest.raises(RenderStopped):
        run_all([Run(slow, 1.0)], workers=1, should_stop=should_stop)
    assert asked and all(asked)


def test_clip_info_is_read_from_ffmpegs_report() -> None:
    report = [
        "Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'intro.mov':",
        "  Duration: 00:01:02.50, start: 0.000000, bitrate: 1000 kb/s",
        "  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p, 640x480",
        "  Stream #0:1[0x2](und): Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, stereo",
    ]
    info = parse_clip_info(report)
    assert info is not None and info.seconds == 62.5 and info.has_video and info.has_audio
    assert parse_clip_info(report[:1]) is None

