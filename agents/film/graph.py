"""The one ffmpeg command that renders a film: inputs, filter graph, encoder settings.

Pictures: each normalised photo is one frame of an image sequence that ``zoompan`` turns into a
slow zoom or pan (Ken Burns) for its share of the scene; a scene's pictures are joined by short
cross-fades, scenes by the script's transition (``xfade``). A scene without pictures is a plain
charcoal background (``#14141C``). The intro clip, scaled and letter-boxed to the frame, plays
first.
Sound: each narration is placed after the scene's lead-in and padded to the scene's length, the
segments are joined end to end, and the music bed (looped, faded in and out) is ducked under
the voice by a side-chain compressor keyed on it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from agents.film.inputs import StagedMedia
from agents.film.timeline import AUDIO_RATE, LEAD_SECONDS, SceneTiming, Timeline
from agents.film.types import XFADE_BY_TRANSITION

BACKGROUND_COLOUR = "0x14141C"
# Encoding is most of a render's CPU: every pixel of a slow zoom moves a little each frame.
# x264 "superfast" spends about 20% less than "veryfast" and, at CRF 24, keeps a higher SSIM
# for a larger file (about 1.5 Mbit/s at 720p); bench/film_render.py shows what it costs.
VIDEO_CODEC = ("-c:v", "libx264", "-preset", "superfast", "-crf", "24",
               "-profile:v", "high", "-pix_fmt", "yuv420p")
AUDIO_CODEC = ("-c:a", "aac", "-b:a", "160k", "-ar", str(AUDIO_RATE), "-ac", "2")
KEN_BURNS_ZOOM = 1.12  # how far a picture zooms (or sits zoomed, while it pans)
MUSIC_VOLUME = 0.30
MUSIC_FADE_IN_SECONDS = 1.5
MUSIC_FADE_OUT_SECONDS = 3.0
FILM_FADE_IN_SECONDS = 0.5
FILM_FADE_OUT_SECONDS = 0.8
# Ducking: the music drops well under the voice as soon as someone speaks, and comes back
# slowly after (ffmpeg's defaults are tuned for drums, not speech).
DUCKING = "threshold=0.02:ratio=8:attack=40:release=600"
_STEREO = f"aformat=sample_fmts=fltp:sample_rates={AUDIO_RATE}:channel_layouts=stereo"
_CENTRE_X = "(iw-iw/zoom)/2"
_CENTRE_Y = "(ih-ih/zoom)/2"


@dataclass(frozen=True)
class StagedScene:
    """A scene's files in the scratch folder."""

    pictures: int  # how many of the film's pictures, in turn, this scene shows
    narration: StagedMedia | None
    transition: str


@dataclass(frozen=True)
class StagedFilm:
    """Everything ffmpeg reads for a film, by bare file name inside the scratch folder."""

    scenes: tuple[StagedScene, ...]
    width: int
    height: int
    pictures: str | None = None  # the normalised JPEGs, an image2 pattern counting from 0
    intro: StagedMedia | None = None
    intro_has_audio: bool = False
    music: StagedMedia | None = None
    subtitles: str | None = None  # our WebVTT; None when no scene has words


def _motion(index: int, frames: int) -> tuple[str, str, str]:
    """The zoompan z, x, y expressions of the ``index``-th picture: four moves, in turn."""
    last = max(1, frames - 1)
    step = f"{KEN_BURNS_ZOOM - 1:.4f}*on/{last}"
    moves = (
        (f"1+{step}", _CENTRE_X, _CENTRE_Y),  # zoom in on the centre
        (f"{KEN_BURNS_ZOOM}", f"(iw-iw/zoom)*on/{last}", _CENTRE_Y),  # pan to the right
        (f"{KEN_BURNS_ZOOM}-{step}", _CENTRE_X, _CENTRE_Y),  # zoom out from the centre
        (f"{KEN_BURNS_ZOOM}", f"(iw-iw/zoom)*(1-on/{last})", f"(ih-ih/zoom)*(1-on/{last})"),
    )
    return moves[index % len(moves)]


class _Graph:
    """Inputs and filter chains of one ffmpeg command, each input opened the same safe way."""

    def __init__(self) -> None:
        self.inputs: list[str] = []
        self.chains: list[str] = []
        self._count = 0

    def input(self, name: str, demuxer: str, *before: str) -> int:
        self.inputs += [*before, "-protocol_whitelist", "file", "-f", demuxer, "-i", name]
        self._count += 1
        return self._count - 1

    def add(self, chain: str) -> None:
        self.chains.append(chain)


@dataclass(frozen=True)
class _Clip:
    """A labelled video stream of ``frames`` frames; ``overlap`` frames of its end cross into
    the next clip with the xfade ``effect``."""

    label: str
    frames: int
    overlap: int = 0
    effect: str = "fade"


def _join(graph: _Graph, clips: list[_Clip], fps: int, out: str) -> None:
    """Play the clips one after another, each cross-fading into the next.

    Each clip is cut into head, body and tail (``split`` + ``trim`` pass frames through
    untouched); ``xfade`` blends only a tail with the next head, and one ``concat`` strings it
    all together. Chaining whole clips through ``xfade`` instead costs a frame copy per clip
    level for every frame of the film (ffmpeg 5.1 measured: 1.6 ms a frame a level).
    """
    sequence: list[str] = []
    for j, clip in enumerate(clips):
        before = clips[j - 1].overlap if j else 0
        parts = [name for name, wanted in (("h", before), ("b", True), ("t", clip.overlap))
                 if wanted]
        source = {part: f"{clip.label}{part}" for part in parts}
        if len(parts) > 1:
            outputs = "".join(f"[{source[part]}]" for part in parts)
            graph.add(f"[{clip.label}]split={len(parts)}{outputs}")
        else:
            source["b"] = clip.label
        if before:
            graph.add(f"[{source['h']}]trim=end_frame={before}[{clip.label}head]")
            previous = clips[j - 1]
            graph.add(f"[{previous.label}tail][{clip.label}head]xfade=transition={previous.effect}:"
                      f"duration={before / fps:.6f}:offset=0[{clip.label}in]")
            sequence.append(f"{clip.label}in")
        end = clip.frames - clip.overlap
        graph.add(f"[{source['b']}]trim=start_frame={before}:end_frame={end},"
                  f"setpts=PTS-STARTPTS[{clip.label}body]")
        sequence.append(f"{clip.label}body")
        if clip.overlap:
            graph.add(f"[{source['t']}]trim=start_frame={clip.frames - clip.overlap},"
                      f"setpts=PTS-STARTPTS[{clip.label}tail]")
    graph.add("".join(f"[{label}]" for label in sequence)
              + f"concat=n={len(sequence)}:v=1:a=0[{out}]")


def _pictures(graph: _Graph, staged: StagedFilm) -> None:
    """Labels ``pic0``, ``pic1``...: every picture of the film, one frame each.

    One input for them all (not one per photo): ffmpeg 7 and later give each input its own
    threads, whose stacks count against the memory cap; and a picture is decoded only when
    its turn comes.
    """
    count = sum(scene.pictures for scene in staged.scenes)
    if not count or staged.pictures is None:
        return
    source = graph.input(staged.pictures, "image2", "-pattern_type", "sequence",
                         "-start_number", "0", "-framerate", "1")
    outputs = "".join(f"[pic{k}]" for k in range(count))
    # Converted once, before zoompan, so no frame it makes needs converting again.
    graph.add(f"[{source}:v]format=yuv420p,split={count}{outputs}")


def _scene_clips(graph: _Graph, number: int, scene: StagedScene, timing: SceneTiming,
                 staged: StagedFilm, timeline: Timeline, first_picture: int) -> list[_Clip]:
    """The scene's pictures in motion (or its plain background), cross-fading into each other."""
    size = f"{staged.width}x{staged.height}"
    fps = timeline.fps
    if not scene.pictures:
        label = f"bg{number}"
        graph.add(f"color=c={BACKGROUND_COLOUR}:s={size}:r={fps},format=yuv420p,"
                  f"trim=end_frame={timing.clip_frames[0]},setsar=1[{label}]")
        return [_Clip(label, timing.clip_frames[0])]
    clips = []
    for k, frames in enumerate(timing.clip_frames):
        picture = first_picture + k
        z, x, y = _motion(picture, frames)
        label = f"p{number}x{k}"
        graph.add(f"[pic{picture}]trim=start_frame={picture}:end_frame={picture + 1},"
                  f"setpts=PTS-STARTPTS,zoompan=z='{z}':x='{x}':y='{y}':d={frames}:"
                  f"s={size}:fps={fps},setsar=1[{label}]")
        clips.append(_Clip(label, frames, timeline.image_fade_frames))
    return clips


def _intro_clip(graph: _Graph, staged: StagedFilm, timeline: Timeline, source: int) -> _Clip:
    """The intro clip letter-boxed to the frame, its last frame held while the film enters."""
    width, height = staged.width, staged.height
    frames = timeline.intro_frames + timeline.transition_frames
    graph.add(
        f"[{source}:v]scale={width}:{height}:force_original_aspect_ratio=decrease,"
        f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2:color=black,setsar=1,fps={timeline.fps},"
        f"format=yuv420p,tpad=stop_mode=clone:stop_duration={timeline.seconds(frames):.6f},"
        f"trim=end_frame={frames},setpts=PTS-STARTPTS[intro]"
    )
    return _Clip("intro", frames)


def _silence(samples: int, out: str) -> str:
    return f"anullsrc=r={AUDIO_RATE}:cl=stereo,atrim=end_sample={samples}[{out}]"


def _sound(graph: _Graph, staged: StagedFilm, timeline: Timeline, intro_source: int | None,
           ) -> str:
    """The label of the film's finished sound track."""
    segments = []
    if staged.intro is not None and intro_source is not None:
        samples = timeline.samples(timeline.intro_frames)
        if staged.intro_has_audio:
            graph.add(f"[{intro_source}:a]{_STEREO},asetpts=PTS-STARTPTS,"
                      f"apad=whole_len={samples},atrim=end_sample={samples}[aintro]")
        else:
            graph.add(_silence(samples, "aintro"))
        segments.append("aintro")
    lead_ms = round(LEAD_SECONDS * 1000)
    for number, (scene, timing) in enumerate(zip(staged.scenes, timeline.scenes, strict=True)):
        samples = timeline.samples(timing.frames)
        if scene.narration is None:
            graph.add(_silence(samples, f"a{number}"))
        else:
            source = graph.input(scene.narration.name, scene.narration.demuxer)
            spoken = timing.voice_end - timing.voice_start
            graph.add(f"[{source}:a]{_STEREO},atrim=end={spoken:.6f},asetpts=PTS-STARTPTS,"
                      f"adelay=delays={lead_ms}:all=1,apad=whole_len={samples},"
                      f"atrim=end_sample={samples}[a{number}]")
        segments.append(f"a{number}")
    total = timeline.total_seconds
    graph.add("".join(f"[{label}]" for label in segments)
              + f"concat=n={len(segments)}:v=0:a=1[voice]")
    if staged.music is None:
        mixed = "voice"
    else:
        source = graph.input(staged.music.name, staged.music.demuxer, "-stream_loop", "-1")
        samples = timeline.samples(timeline.total_frames)
        fade_at = max(0.0, total - MUSIC_FADE_OUT_SECONDS)
        graph.add(f"[{source}:a]{_STEREO},atrim=end_sample={samples},asetpts=PTS-STARTPTS,"
                  f"volume={MUSIC_VOLUME},afade=t=in:d={MUSIC_FADE_IN_SECONDS},"
                  f"afade=t=out:st={fade_at:.3f}:d={MUSIC_FADE_OUT_SECONDS}[bed]")
        graph.add("[voice]asplit=2[speech][key]")
        graph.add(f"[bed][key]sidechaincompress={DUCKING}[ducked]")
        graph.add("[speech][ducked]amix=inputs=2:duration=first:normalize=0[mixed]")
        mixed = "mixed"
    graph.add(f"[{mixed}]afade=t=out:st={max(0.0, total - FILM_FADE_OUT_SECONDS):.3f}:"
              f"d={FILM_FADE_OUT_SECONDS}[aout]")
    return "aout"


@dataclass(frozen=True)
class RenderCommand:
    """ffmpeg's arguments for a film, around a filter graph too long for a command line (Linux
    caps one argument at 128 KiB), which ffmpeg reads from a file."""

    inputs: list[str]
    filter_graph: str
    outputs: list[str]

    def arguments(self, graph_option: list[str]) -> list[str]:
        """The whole argument list, ``graph_option`` naming the filter graph's file."""
        return [*self.inputs, *graph_option, *self.outputs]


def render_command(staged: StagedFilm, timeline: Timeline, output: str, *,
                   threads: int = 0) -> RenderCommand:
    """ffmpeg's arguments (after the global options) for the whole film into ``output``."""
    graph = _Graph()
    fps = timeline.fps
    intro_source = None
    clips: list[_Clip] = []
    if staged.intro is not None:
        intro_source = graph.input(staged.intro.name, staged.intro.demuxer)
        clips.append(_intro_clip(graph, staged, timeline, intro_source))
    _pictures(graph, staged)
    pictures = 0
    for number, (scene, timing) in enumerate(zip(staged.scenes, timeline.scenes, strict=True)):
        if clips:  # the scene enters over the tail of what came before
            clips[-1] = replace(clips[-1], overlap=timeline.transition_frames,
                                effect=XFADE_BY_TRANSITION[scene.transition])
        scene_clips = _scene_clips(graph, number, scene, timing, staged, timeline, pictures)
        clips += scene_clips
        clips[-1] = replace(clips[-1], overlap=0)
        pictures += scene.pictures
    _join(graph, clips, fps, "vjoined")
    total = timeline.total_seconds
    fade_in = "" if staged.intro is not None else f"fade=t=in:st=0:d={FILM_FADE_IN_SECONDS},"
    graph.add(f"[vjoined]{fade_in}fade=t=out:st={max(0.0, total - FILM_FADE_OUT_SECONDS):.3f}:"
              f"d={FILM_FADE_OUT_SECONDS},format=yuv420p[vout]")
    sound = _sound(graph, staged, timeline, intro_source)
    subtitle_maps: list[str] = []
    if staged.subtitles is not None:
        source = graph.input(staged.subtitles, "webvtt")
        subtitle_maps = ["-map", f"{source}:s", "-c:s", "mov_text"]
    return RenderCommand(graph.inputs, ";\n".join(graph.chains), [
        "-map", "[vout]", "-map", f"[{sound}]", *subtitle_maps,
        *VIDEO_CODEC, "-r", str(fps), "-g", str(fps * 2),
        *(["-threads", str(threads)] if threads else []),
        *AUDIO_CODEC,
        "-frames:v", str(timeline.total_frames),
        "-movflags", "+faststart", "-f", "mp4", "-y", output,
    ])
