"""When everything happens in a film, counted in whole frames so video and audio agree exactly.

A scene lasts ``LEAD_SECONDS`` of air, then its narration, then ``TAIL_SECONDS`` of air (at least
``MIN_SCENE_SECONDS`` in all). The next scene's transition plays over the first
``TRANSITION_SECONDS`` of that scene's lead-in, so a transition never covers speech: each scene's
pictures are rendered that much longer than its span, and the film lasts the sum of the spans
(plus the intro clip). The pictures of a scene share its time, each shown at least
``MIN_IMAGE_SECONDS`` (a short scene shows only its first few), joined by short cross-fades.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.errors import AgentError
from agents.film.types import TRANSITIONS, FilmInput, RenderLimits, SceneInput, SceneSpan

LEAD_SECONDS = 0.6
TAIL_SECONDS = 1.0
MIN_SCENE_SECONDS = 3.0
TRANSITION_SECONDS = 0.8
MIN_IMAGE_SECONDS = 3.0
IMAGE_FADE_SECONDS = 0.6
AUDIO_RATE = 48_000


@dataclass(frozen=True)
class SceneTiming:
    """One scene's place in the film and how its pictures share it (frame counts)."""

    start_frame: int
    frames: int  # the scene's span
    clip_frames: tuple[int, ...]  # each shown picture's clip, cross-fade overlaps included
    voice_start: float  # seconds in the film where its narration (and subtitles) start
    voice_end: float

    @property
    def end_frame(self) -> int:
        return self.start_frame + self.frames


@dataclass(frozen=True)
class Timeline:
    """Frame-exact layout of a film: the intro, then each scene."""

    fps: int
    intro_frames: int
    scenes: tuple[SceneTiming, ...]
    transition_frames: int
    image_fade_frames: int

    @property
    def total_frames(self) -> int:
        return self.intro_frames + sum(scene.frames for scene in self.scenes)

    @property
    def total_seconds(self) -> float:
        return self.total_frames / self.fps

    def seconds(self, frames: int) -> float:
        return frames / self.fps

    def samples(self, frames: int) -> int:
        """Audio samples in ``frames`` of video (exact for 24, 25, 30, 50 and 60 fps)."""
        return frames * AUDIO_RATE // self.fps

    def spans(self, chapter_ids: tuple[str, ...]) -> tuple[SceneSpan, ...]:
        return tuple(
            SceneSpan(chapter, round(self.seconds(t.start_frame), 3),
                      round(self.seconds(t.end_frame), 3))
            for chapter, t in zip(chapter_ids, self.scenes, strict=True)
        )


def _invalid(message: str) -> AgentError:
    return AgentError("invalid_input", message, retryable=False)


def scene_seconds(scene: SceneInput) -> float:
    """How long a scene lasts: its narration with the air around it, at least the minimum."""
    return max(MIN_SCENE_SECONDS, LEAD_SECONDS + scene.narration_seconds + TAIL_SECONDS)


def _too_long(seconds: float, limits: RenderLimits) -> AgentError:
    return _invalid(f"The film would last {seconds:.0f} s; the limit is "
                    f"{limits.max_film_seconds:.0f} s.")


def check_film(film: FilmInput, limits: RenderLimits) -> None:
    """Refuse, before any work, a film the renderer will not make: too many scenes, too long
    (the intro clip's length is checked once it is known), bad frame or transition."""
    if not film.scenes:
        raise _invalid("A film needs at least one scene.")
    if len(film.scenes) > limits.max_scenes:
        raise _invalid(f"A film has at most {limits.max_scenes} scenes ({len(film.scenes)} given).")
    if not (16 <= film.width <= 3840 and 16 <= film.height <= 2160):
        raise _invalid("The frame must be between 16x16 and 3840x2160 pixels.")
    if film.width % 2 or film.height % 2:
        raise _invalid("The frame's width and height must be even (yuv420p).")
    if not 1 <= film.fps <= 60 or AUDIO_RATE % film.fps:
        raise _invalid("The frame rate must divide 48000 and be at most 60.")
    for scene in film.scenes:
        if scene.transition not in TRANSITIONS:
            raise _invalid(f"Unknown transition {scene.transition!r} in scene {scene.chapter_id}.")
        if not 0 <= scene.narration_seconds <= limits.max_film_seconds:
            raise _invalid(f"Scene {scene.chapter_id} has a narration length out of range.")
    scenes = sum(scene_seconds(scene) for scene in film.scenes)
    if scenes > limits.max_film_seconds:
        raise _too_long(scenes, limits)


def _share(total: int, parts: int, overlap: int) -> tuple[int, ...]:
    """Clip lengths of ``parts`` pictures filling ``total`` frames with ``overlap``-frame fades."""
    whole = total + (parts - 1) * overlap
    base, extra = divmod(whole, parts)
    return tuple(base + (1 if k < extra else 0) for k in range(parts))


def plan_timeline(film: FilmInput, limits: RenderLimits, *, intro_seconds: float = 0.0) -> Timeline:
    """Lay out the film; ``invalid_input`` when it would be longer than the limit."""
    check_film(film, limits)
    fps = film.fps
    transition = round(TRANSITION_SECONDS * fps)
    fade = round(IMAGE_FADE_SECONDS * fps)
    min_clip = round(MIN_IMAGE_SECONDS * fps)
    start = intro_frames = round(intro_seconds * fps)
    timings: list[SceneTiming] = []
    for index, scene in enumerate(film.scenes):
        frames = round(scene_seconds(scene) * fps)
        last = index == len(film.scenes) - 1
        shown = frames + (0 if last else transition)  # the next transition overlaps our tail
        pictures = max(1, min(len(scene.images), limits.max_images_per_scene, shown // min_clip))
        voice_start = (start / fps) + LEAD_SECONDS
        if scene.narration is not None:
            voice_end = voice_start + scene.narration_seconds
        else:  # silent: its words stay on screen for the scene's time
            voice_end = (start + frames) / fps - TAIL_SECONDS
        timings.append(SceneTiming(
            start_frame=start,
            frames=frames,
            clip_frames=_share(shown, pictures, fade),
            voice_start=voice_start,
            voice_end=max(voice_start, voice_end),
        ))
        start += frames
    timeline = Timeline(fps, intro_frames, tuple(timings), transition, fade)
    if timeline.total_seconds > limits.max_film_seconds:
        raise _too_long(timeline.total_seconds, limits)
    return timeline
