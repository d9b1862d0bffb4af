"""The ffmpeg commands that render a film: the picture in segments, the sound, then the mux.

Pictures: each normalised photo is one frame of an image sequence that ``zoompan`` turns into a
slow zoom or pan (Ken Burns) for its share of the scene; a scene's pictures are joined by short
cross-fades, scenes by the script's transition (``xfade``). A scene without pictures is a plain
charcoal background (``#14141C``). The intro clip, scaled and letter-boxed to the frame, plays
first. The picture is encoded in segments of a few clips, one ffmpeg run each: every finished
cross-fade in a graph keeps its frames until the graph ends (about 10 MB each at 720p, measured
with ffmpeg 5.1), so one graph for a 60-scene film outgrew any sane memory cap.
Sound: each narration is placed after the scene's lead-in and padded to the scene's length, the
narrations are joined end to end, and the music bed (looped, faded in and out) is ducked under
the voice by a side-chain compressor keyed on it; one run, encoded to AAC.
The mux copies both into the MP4 with the subtitles (``mov_text``) and ``+faststart``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from agents.film.inputs import StagedMedia
from agents.film.timeline import AUDIO_RATE, LEAD_SECONDS, Timeline
from agents.film.types import XFADE_BY_TRANSITION

BACKGROUND_COLOUR = "0x14141C"
# Encoding is most of a render's CPU: every pixel of a slow zoom moves a little each frame.
# x264 "superfast" spends about 20% less than "veryfast" and, at CRF 24, keeps a higher SSIM
# for a larger file (about 1.5 Mbit/s at 720p); bench/film_render.py shows what it costs.
VIDEO_CODEC = ("-c:v", "libx264", "-preset", "superfast", "-crf", "24",
               "-profile:v", "high", "-pix_fmt", "yuv420p")
AUDIO_CODEC = ("-c:a", "aac", "-b:a", "160k", "-ar", str(AUDIO_RATE), "-ac", "2")
# Filters slice-threaded, each format conversion gets a thread pool of its own: a 60-scene film
# started hundreds of threads, whose stacks alone broke the memory cap (RLIMIT_AS). Encoding
# has the cores; the filters cost a fifth of it.
SINGLE_THREADED_FILTERS = ("-filter_complex_threads", "1")
CLIPS_PER_SEGMENT = 8
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


@dataclass(frozen=True)
class RenderCommand:
    """One ffmpeg run: its inputs, a filter graph (too long for a command line, where Linux caps
    one argument at 128 KiB: ffmpeg reads it from a file) and its outputs."""

    inputs: list[str]
    filter_graph: str
    outputs: list[str]
    output: str  # the file it writes
    frames: int = 0  # video frames it encodes (0: none)

    def arguments(self, graph_option: list[str]) -> list[str]:
        """The whole argument list, ``graph_option`` naming the filter graph's file."""
        return [*self.inputs, *graph_option, *self.outputs]


@dataclass(frozen=True)
class Clip:
    """A stretch of the film's picture: one photo in motion, a plain background or the intro.

    ``overlap`` frames of its end cross into the next clip with the xfade ``effect``.
    """

    kind: str  # "picture" | "background" | "intro"
    frames: int
    overlap: int = 0
    effect: str = "fade"
    picture: int = -1  # the photo's place in the film's image sequence


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


def film_clips(staged: StagedFilm, timeline: Timeline) -> list[Clip]:
    """The film's picture as a list of clips, each cross-fading into the next."""
    clips: list[Clip] = []
    if staged.intro is not None:
        clips.append(Clip("intro", timeline.intro_frames + timeline.transition_frames))
    picture = 0
    for scene, timing in zip(staged.scenes, timeline.scenes, strict=True):
        if clips:  # the scene enters over the tail of what came before
            clips[-1] = replace(clips[-1], overlap=timeline.transition_frames,
                                effect=XFADE_BY_TRANSITION[scene.transition])
        if not scene.pictures:
            clips.append(Clip("background", timing.clip_frames[0]))
            continue
        for frames in timing.clip_frames:
            clips.append(Clip("picture", frames, timeline.image_fade_frames, picture=picture))
            picture += 1
        clips[-1] = replace(clips[-1], overlap=0)
    return clips


class _Graph:
    """Inputs and filter chains of one ffmpeg command, each input opened the same safe way."""

    def __init__(self) -> None:
        self.inputs: list[str] = list(SINGLE_THREADED_FILTERS)
        self.chains: list[str] = []
        self._count = 0

    def input(self, name: str, demuxer: str, *before: str) -> int:
        self.inputs += [*before, "-protocol_whitelist", "file", "-f", demuxer, "-i", name]
        self._count += 1
        return self._count - 1

    def add(self, chain: str) -> None:
        self.chains.append(chain)

    def text(self) -> str:
        return ";\n".join(self.chains)


def _sources(graph: _Graph, clips: list[Clip], staged: StagedFilm, fps: int) -> list[str]:
    """A labelled stream for each clip: its whole length, made only as far as it is read."""
    size = f"{staged.width}x{staged.height}"
    pictures = [clip.picture for clip in clips if clip.kind == "picture"]
    if pictures and staged.pictures is not None:
        # One input for the segment's photos (ffmpeg 7 and later give each input threads of its
        # own), split to one zoompan each; a photo is decoded when its turn comes.
        first = pictures[0]
        source = graph.input(staged.pictures, "image2", "-pattern_type", "sequence",
                             "-start_number", str(first), "-framerate", "1")
        outputs = "".join(f"[pic{k}]" for k in pictures)
        # Converted once, before zoompan, so no frame it makes needs converting again.
        graph.add(f"[{source}:v]format=yuv420p,split={len(pictures)}{outputs}")
    labels = []
    for number, clip in enumerate(clips):
        label = f"c{number}"
        if clip.kind == "picture":
            z, x, y = _motion(clip.picture, clip.frames)
            offset = clip.picture - pictures[0]
            graph.add(f"[pic{clip.picture}]trim=start_frame={offset}:end_frame={offset + 1},"
                      f"setpts=PTS-STARTPTS,zoompan=z='{z}':x='{x}':y='{y}':d={clip.frames}:"
                      f"s={size}:fps={fps},setsar=1[{label}]")
        elif clip.kind == "background":
            graph.add(f"color=c={BACKGROUND_COLOUR}:s={size}:r={fps},format=yuv420p,"
                      f"trim=end_frame={clip.frames},setsar=1[{label}]")
        else:
            assert staged.intro is not None
            source = graph.input(staged.intro.name, staged.intro.demuxer)
            # Letter-boxed to the frame, its last picture held while the film enters over it.
            graph.add(
                f"[{source}:v]scale={staged.width}:{staged.height}:"
                f"force_original_aspect_ratio=decrease,pad={staged.width}:{staged.height}:"
                f"(ow-iw)/2:(oh-ih)/2:color=black,setsar=1,fps={fps},format=yuv420p,"
                f"tpad=stop_mode=clone:stop_duration={clip.frames / fps:.6f},"
                f"trim=end_frame={clip.frames},setpts=PTS-STARTPTS[{label}]"
            )
        labels.append(label)
    return labels


def _join(graph: _Graph, clips: list[Clip], labels: list[str], fps: int, *, skip: int,
          lead_out: bool) -> str:
    """Play the clips one after another, each cross-fading into the next; the label of the result.

    Each clip is cut into head, body and tail (``split`` + ``trim`` pass frames through
    untouched); ``xfade`` blends only a tail with the next head, and one ``concat`` strings it
    all together (chaining whole clips through xfade copies every frame at every level).
    ``skip``: frames of the first clip the previous segment already showed. ``lead_out``: the
    last clip is the next segment's first, of which only the head (the transition) is shown.
    """
    sequence: list[str] = []
    shown = len(clips) - 1 if lead_out else len(clips)
    for j in range(shown):
        clip, label = clips[j], labels[j]
        before = clips[j - 1].overlap if j else 0
        start = before if j else skip
        parts = [name for name, wanted in (("h", before), ("b", True), ("t", clip.overlap))
                 if wanted]
        source = {part: f"{label}{part}" for part in parts}
        if len(parts) > 1:
            outputs = "".join(f"[{source[part]}]" for part in parts)
            graph.add(f"[{label}]split={len(parts)}{outputs}")
        else:
            source["b"] = label
        if before:
            graph.add(f"[{source['h']}]trim=end_frame={before}[{label}head]")
            graph.add(f"[{labels[j - 1]}tail][{label}head]xfade=transition="
                      f"{clips[j - 1].effect}:duration={before / fps:.6f}:offset=0[{label}in]")
            sequence.append(f"{label}in")
        graph.add(f"[{source['b']}]trim=start_frame={start}:end_frame={clip.frames - clip.overlap},"
                  f"setpts=PTS-STARTPTS[{label}body]")
        sequence.append(f"{label}body")
        if clip.overlap:
            graph.add(f"[{source['t']}]trim=start_frame={clip.frames - clip.overlap},"
                      f"setpts=PTS-STARTPTS[{label}tail]")
    if lead_out:
        last, label = clips[-2], labels[-1]
        graph.add(f"[{label}]trim=end_frame={last.overlap}[{label}head]")
        graph.add(f"[{labels[-2]}tail][{label}head]xfade=transition={last.effect}:"
                  f"duration={last.overlap / fps:.6f}:offset=0[{label}in]")
        sequence.append(f"{label}in")
    graph.add("".join(f"[{label}]" for label in sequence)
              + f"concat=n={len(sequence)}:v=1:a=0[joined]")
    return "joined"


def video_segments(staged: StagedFilm, timeline: Timeline, *,
                   threads: int = 0) -> list[RenderCommand]:
    """The picture's segments, each ending right after a transition (or the film)."""
    fps = timeline.fps
    clips = film_clips(staged, timeline)
    commands: list[RenderCommand] = []
    skip = 0
    film_frame = 0
    for first in range(0, len(clips), CLIPS_PER_SEGMENT):
        last = min(first + CLIPS_PER_SEGMENT, len(clips))
        lead_out = last < len(clips)
        part = clips[first: last + (1 if lead_out else 0)]
        frames = sum(c.frames for c in clips[first:last]) - skip - sum(
            c.overlap for c in clips[first:last - 1])
        graph = _Graph()
        labels = _sources(graph, part, staged, fps)
        joined = _join(graph, part, labels, fps, skip=skip, lead_out=lead_out)
        fades = []
        if film_frame == 0 and staged.intro is None:
            fades.append(f"fade=t=in:st=0:d={FILM_FADE_IN_SECONDS}")
        if not lead_out:
            fade_at = max(0.0, frames / fps - FILM_FADE_OUT_SECONDS)
            fades.append(f"fade=t=out:st={fade_at:.3f}:d={FILM_FADE_OUT_SECONDS}")
        graph.add(f"[{joined}]{','.join([*fades, 'format=yuv420p'])}[vout]")
        name = f"segment-{len(commands):03d}.mp4"
        commands.append(RenderCommand(graph.inputs, graph.text(), [
            "-map", "[vout]", *VIDEO_CODEC, "-r", str(fps), "-g", str(fps * 2),
            *(["-threads", str(threads)] if threads else []),
            "-frames:v", str(frames), "-f", "mp4", "-y", name,
        ], name, frames))
        film_frame += frames
        skip = clips[last - 1].overlap if lead_out else 0
    assert film_frame == timeline.total_frames, (film_frame, timeline.total_frames)
    return commands


def _silence(samples: int, out: str) -> str:
    return f"anullsrc=r={AUDIO_RATE}:cl=stereo,atrim=end_sample={samples}[{out}]"


def _sound(graph: _Graph, staged: StagedFilm, timeline: Timeline, intro_source: int | None,
           ) -> str:
    """The label of the film's finished sound track."""
    segments = []
    if staged.intro is not None:
        samples = timeline.samples(timeline.intro_frames)
        if intro_source is not None:
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


def audio_command(staged: StagedFilm, timeline: Timeline) -> RenderCommand:
    """The whole sound track, encoded to AAC."""
    graph = _Graph()
    intro_source = None
    if staged.intro is not None and staged.intro_has_audio:
        intro_source = graph.input(staged.intro.name, staged.intro.demuxer)
    sound = _sound(graph, staged, timeline, intro_source)
    name = "sound.m4a"
    return RenderCommand(graph.inputs, graph.text(), [
        "-map", f"[{sound}]", *AUDIO_CODEC, "-f", "mp4", "-y", name,
    ], name)


def mux_arguments(segments: str, sound: str, subtitles: str | None, output: str) -> list[str]:
    """Copy the picture's segments (a concat list) and the sound into the MP4, with subtitles."""
    safe = ["-protocol_whitelist", "file"]
    return [
        *safe, "-f", "concat", "-safe", "1", "-i", segments,
        *safe, "-f", "mov", "-i", sound,
        *([*safe, "-f", "webvtt", "-i", subtitles] if subtitles else []),
        "-map", "0:v", "-map", "1:a", *(["-map", "2:s", "-c:s", "mov_text"] if subtitles else []),
        "-c:v", "copy", "-c:a", "copy", "-movflags", "+faststart", "-f", "mp4", "-y", output,
    ]
