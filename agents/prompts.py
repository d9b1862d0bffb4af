"""Prompts of the agents as versioned constants.

Bump a ``*_PROMPT_VERSION`` whenever the text it covers changes: the version is part of every
cache key, so a new prompt never serves answers produced by the old one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

# --- Transcription -------------------------------------------------------------------------

TRANSCRIPTION_PROMPT_VERSION = "transcription-v1"

TRANSCRIPTION_INSTRUCTION = (
    "Transcribe this voice note accurately, word for word, in the language it is spoken in. "
    "Ignore background noise, music and sounds that are not speech. "
    "Keep the speaker's self-corrections and hesitations when they carry meaning. "
    "Output only the transcription: no preamble, no title, no quotes, no commentary."
)

# --- Story builder -------------------------------------------------------------------------

# v2: answers are streamed, repaired when safe, and retried once with STORY_CORRECTION.
# v3: the settings' creativity is said in words (CREATIVITY_GUIDANCE): Gemini 3.x models take
# no temperature.
STORY_PROMPT_VERSION = "story-v3"

STORY_SYSTEM_INSTRUCTION = (
    "You are LifeTales' story writer. You turn a person's moments (short notes, voice-note "
    "transcriptions, photo counts) from one space - a trip, a year, a project - into an "
    "illustrated story made of sections.\n"
    "Rules:\n"
    "- Write in the language the notes are written in.\n"
    "- Stay faithful to the facts in the notes unless the mode below allows liberties; never "
    "invent names, places or events that contradict them.\n"
    "- Follow the chronological order of the notes.\n"
    "- Each section has a short title, its content, and an illustrationPrompt: one sentence in "
    "English describing a single visual scene for an illustrator (no text in the image, no "
    "real person's name).\n"
    "- sourceNoteId is the exact `id` of the note a section comes from, copied verbatim from "
    "the context; when a section merges several notes, use the id of its main note.\n"
    "- Answer only with the JSON array described by the response schema."
)

TONE_INSTRUCTIONS: Mapping[str, str] = MappingProxyType(
    {
        "cinematic": (
            "Tone: cinematic. Write vivid scenes with sensory detail, a sense of movement and "
            "framing, as if describing shots of a film."
        ),
        "funny": (
            "Tone: funny. Light, playful and witty; find the humour in the moments without "
            "mocking anyone."
        ),
        "neutral": (
            "Tone: neutral. Clear, factual, plain prose; no embellishment or dramatization."
        ),
        "emotional": (
            "Tone: emotional. Warm and heartfelt; bring out feelings, relationships and what "
            "the moments meant to the person."
        ),
        "journalistic": (
            "Tone: journalistic. A reporter's account: precise, concrete, who/what/where/when, "
            "short paragraphs, no invented quotes."
        ),
        "poetic": (
            "Tone: poetic. Lyrical prose with imagery and rhythm, while keeping the facts "
            "recognizable."
        ),
    }
)

MODE_INSTRUCTIONS: Mapping[str, str] = MappingProxyType(
    {
        "transcription": (
            "Mode: transcription. Produce exactly one section per note, in the notes' order, "
            "each with that note's id as sourceNoteId. The content stays as close as possible "
            "to the note's own words (its text and transcriptions), only lightly corrected for "
            "readability."
        ),
        "chapter": (
            "Mode: chapter. Produce exactly one section per note, in the notes' order, each "
            "with that note's id as sourceNoteId. Each section is a short chapter retelling "
            "that moment in the requested tone."
        ),
        "clean": (
            "Mode: clean. Tidy the moments into a readable story. You may merge related notes "
            "(same day, same place or same topic) into one section: aim for about half as many "
            "sections as there are notes, and at least one section."
        ),
        "creative": (
            "Mode: creative. Take liberties to build a narrative arc (a beginning, turning "
            "points, an ending) out of the moments. Aim for about half as many sections as "
            "there are notes, and at least two sections."
        ),
    }
)

# Appended to the story context when the first answer was unusable; {problems} says exactly
# what was wrong, {requirement} what the mode needs (one of STORY_REQUIREMENTS).
STORY_CORRECTION = (
    "Your previous answer could not be used: {problems}.\n"
    "Write the whole story again as one complete JSON array of sections, following every rule "
    "above. {requirement}"
)

_ONE_SECTION_PER_NOTE = (
    "It must contain exactly {count} sections, one per note, in the notes' order, each with a "
    "non-empty title and content and that note's id as sourceNoteId: {ids}."
)

STORY_REQUIREMENTS: Mapping[str, str] = MappingProxyType(
    {
        "transcription": _ONE_SECTION_PER_NOTE,
        "chapter": _ONE_SECTION_PER_NOTE,
        "clean": (
            "It must contain at least one section with a non-empty title and content; a "
            "sourceNoteId, when given, must be one of: {ids}."
        ),
        "creative": (
            "It must contain at least two sections, each with a non-empty title and content; a "
            "sourceNoteId, when given, must be one of: {ids}."
        ),
    }
)

# --- Film script -----------------------------------------------------------------------------

FILM_SCRIPT_PROMPT_VERSION = "film-script-v1"

FILM_SCRIPT_INSTRUCTION = (
    "You are LifeTales' film writer. You turn an illustrated story, chapter by chapter, into the "
    "script of a short narrated film: one scene per chapter, in the chapters' order.\n"
    "Rules:\n"
    "- Write the narration in the language of the story, to be read aloud by one narrator: "
    "spoken sentences, no headings, no stage directions, no emoji; about 2.5 words per second "
    "of the scene.\n"
    "- Each scene has the exact `chapter` id of its chapter as chapterId, copied verbatim from "
    "the context; its narrationText; a visualDescription (one English sentence: what is on "
    "screen); durationSeconds between 8 and 45; and a transition into it: fade, slide or "
    "zoom.\n"
    "- musicMood is one of upbeat, calm, emotional, dramatic, neutral: the mood of a music bed "
    "for the whole film.\n"
    "- Stay faithful to the story; never invent names, places or events.\n"
    "- Answer only with the JSON object described by the response schema."
)

FILM_SCRIPT_CORRECTION = (
    "Your previous answer could not be used: {problems}.\n"
    "Write the whole script again as one JSON object following every rule above. It must "
    "contain exactly {count} scenes, one per chapter, in the chapters' order, with these "
    "chapterIds: {ids}."
)


def film_script_correction(problems: Sequence[str], chapter_ids: Sequence[str]) -> str:
    """The corrective instruction of a script's second attempt."""
    return FILM_SCRIPT_CORRECTION.format(problems="; ".join(problems), count=len(chapter_ids),
                                         ids=", ".join(chapter_ids))


# --- Illustration --------------------------------------------------------------------------

ILLUSTRATION_PROMPT_VERSION = "illustration-v1"

ILLUSTRATION_STYLE_TEMPLATES: Mapping[str, str] = MappingProxyType(
    {
        "illustration": (
            "A hand-drawn storybook illustration with soft ink lines and watercolor washes, "
            "warm and inviting. Scene: {prompt}"
        ),
        "cinematic": (
            "A cinematic film still, dramatic lighting, shallow depth of field, rich color "
            "grading, wide composition. Scene: {prompt}"
        ),
        "pastel": (
            "A gentle pastel-toned illustration, soft light, muted pinks, blues and creams, "
            "dreamy and calm. Scene: {prompt}"
        ),
        "realistic": (
            "A realistic photograph, natural light, true-to-life colors and textures, "
            "documentary framing. Scene: {prompt}"
        ),
    }
)

# The frontend's creativity (0-2) in words, by its upper bound: Gemini 3.x advises against
# sampling tweaks, so the prompt carries what the temperature used to (2.x models still get
# ``min(1.5, creativity * 0.75)`` as well).
CREATIVITY_GUIDANCE: tuple[tuple[float, str], ...] = (
    (0.5, "Creativity: literal. Retell only what the notes say, in their order, adding no "
          "detail, image or feeling they do not state."),
    (1.0, "Creativity: restrained. Stay close to the notes; you may add plain connecting "
          "sentences and obvious sensory details, nothing more."),
    (1.5, "Creativity: expressive. Shape the notes into lively scenes with sensory detail, "
          "rhythm and transitions, without changing any fact."),
    (float("inf"), "Creativity: free. Be bold and imaginative in imagery, structure and "
                   "voice; invent atmosphere and inner life freely, but never contradict "
                   "the facts in the notes."),
)


def creativity_guidance(creativity: float) -> str:
    """The sentence that tells the model how freely to write (creativity 0-2)."""
    return next(text for bound, text in CREATIVITY_GUIDANCE if creativity < bound)


ILLUSTRATION_SUFFIX = "No text, letters, captions or watermarks in the image. Aspect ratio 4:3."


def story_system_instruction(tone: str, mode: str, creativity: float = 1.0) -> str:
    """The full system instruction of the story builder for a known tone and mode."""
    return "\n\n".join((STORY_SYSTEM_INSTRUCTION, TONE_INSTRUCTIONS[tone],
                        MODE_INSTRUCTIONS[mode], creativity_guidance(creativity)))


def story_correction(problems: Sequence[str], mode: str, note_ids: Sequence[str]) -> str:
    """The corrective instruction of a story's second attempt (notes in their sorted order)."""
    requirement = STORY_REQUIREMENTS[mode].format(
        count=len(note_ids), ids=", ".join(note_ids)
    )
    return STORY_CORRECTION.format(problems="; ".join(problems), requirement=requirement)


def illustration_prompt(prompt: str, style: str) -> str:
    """Apply a known style's template to a scene description."""
    scene = ILLUSTRATION_STYLE_TEMPLATES[style].format(prompt=prompt.strip())
    return f"{scene}\n{ILLUSTRATION_SUFFIX}"


# --- Speech (narration) --------------------------------------------------------------------

SPEECH_PROMPT_VERSION = "speech-v1"

# Each voiceStyle is a prebuilt voice and director's notes on its delivery. The voices are
# Google's prebuilt TTS voices, chosen by the character Google's voice list gives each
# (read 2026-12-01): Charon "Informative", Vindemiatrix "Gentle", Sulafat "Warm", Gacrux
# "Mature". Bump SPEECH_PROMPT_VERSION when a voice or a note changes.
SPEECH_VOICES: Mapping[str, str] = MappingProxyType(
    {"serious": "Charon", "calm": "Vindemiatrix", "warm": "Sulafat", "storyteller": "Gacrux"}
)

SPEECH_STYLE_NOTES: Mapping[str, str] = MappingProxyType(
    {
        "serious": (
            "Style: serious and composed, like a documentary narrator; steady and clear, "
            "without dramatizing.\nPace: measured."
        ),
        "calm": (
            "Style: calm and soothing, soft and relaxed, never rushed.\n"
            "Pace: slow, with unhurried pauses between sentences."
        ),
        "warm": (
            "Style: warm and friendly, close to the listener, with a gentle smile in the "
            "voice.\nPace: natural and relaxed."
        ),
        "storyteller": (
            "Style: an engaging storyteller reading an audiobook: expressive and vivid, the "
            "tone following the mood of each moment.\nPace: natural, slowing down for the "
            "moments that matter."
        ),
    }
)

# Google's TTS prompting guide: director's notes about the delivery, then the transcript under
# its own heading; the model speaks only the transcript. The fake Gemini relies on this heading
# to know which words are spoken (tests/fakes/gemini_speech.py).
SPEECH_TRANSCRIPT_HEADING = "#### TRANSCRIPT"

SPEECH_INSTRUCTION = (
    "Read the transcript below aloud as a narration, exactly as written, following the "
    "director's notes. Do not read the notes or the headings aloud."
)


def speech_prompt(text: str, voice_style: str, language: str | None = None) -> str:
    """The TTS prompt: how to speak (a known voice style), then the words to speak."""
    notes = SPEECH_STYLE_NOTES[voice_style]
    if language:
        notes += f"\nLanguage: speak in the language tagged {language} (BCP 47)."
    return (f"{SPEECH_INSTRUCTION}\n\n### DIRECTOR'S NOTES\n{notes}\n\n"
            f"{SPEECH_TRANSCRIPT_HEADING}\n{text.strip()}")


# --- narrator clips (image to video) ---------------------------------------------------------

NARRATOR_PROMPT_VERSION = "narrator-v1"

NARRATOR_PROMPT = (
    "Animate the person in this photo into a single continuous shot of {seconds} seconds: "
    "they look into the camera and say, in a warm, natural voice, exactly these words:\n"
    '"{script}"\n'
    "Keep their face, clothes and the background as in the photo; gentle natural motion, "
    "a slow push-in of the camera, soft ambient sound under the voice. No cuts, no on-screen "
    "text, no music."
)


def narrator_prompt(script: str, seconds: int) -> str:
    """The instruction that turns a photo and a script into a talking clip."""
    return NARRATOR_PROMPT.format(seconds=seconds, script=" ".join(script.split()))
