"""How to fix each field of a story: one hint per (model, key), shown with its problems."""

from __future__ import annotations

from videokit.protocol import (
    MAX_FRAMES,
    MAX_PIXELS,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_SIDE,
    MIN_FRAMES,
    MIN_SIDE,
)
from videokit.story.model import MAX_EDIT_IMAGES

__all__ = ["FIELD_HINTS"]


_SIDE = (
    f"a multiple of 16 from {MIN_SIDE} to {MAX_SIDE}, with width x height at most {MAX_PIXELS:,} "
    "pixels (e.g. 832x480, 1280x720, 1920x1088)"
)
_FRAMES = (
    f"clips have 4k+1 frames from {MIN_FRAMES} to {MAX_FRAMES} (e.g. 33, 49, 65, 81); "
    "or give 'duration' in seconds"
)
_DURATION = (
    "seconds per clip, more than 0 and at most 60, e.g. 5; it becomes the nearest 4k+1 frame count"
)
_SEED = f"a whole number from 0 to {MAX_SEED}; leave it out to derive one from the scene id"
_NEGATIVE = (
    f"text naming what to avoid, e.g. 'blurry, distorted, low quality' (at most "
    f"{MAX_PROMPT_CHARS} characters)"
)
_EDIT_STEPS = "denoising steps from 1 to 100: 8 (or 4) with the Lightning LoRA, about 40 without"
_EDIT_GUIDANCE = (
    "true_cfg_scale from 0 to 20: 1 (no CFG) with the Lightning LoRA, about 4 without; "
    "CFG only runs with a negative prompt"
)
_ENDPOINT = "a RunPod endpoint id, or a `videokit serve` URL such as http://gpu-box:8000/v2/edit"

#: A hint for every field, by (model, key). tests/test_story_errors.py checks none is missing.
FIELD_HINTS: dict[tuple[str, str], str] = {
    ("Story", "title"): (
        "a short name for the story (1 to 200 characters), e.g. 'Robbie dances'; leave it out "
        "to name the story after its file"
    ),
    ("Story", "reference"): "an image path (relative to the story file) or a list of them",
    ("Story", "defaults"): "a mapping of what every scene inherits, e.g. {width: 832, frames: 81}",
    ("Story", "scenes"): "a list of scenes, each with at least 'id' and 'motion'",
    ("Story", "timeline"): "a list of scene ids in playback order, e.g. [hello, tuxedo]",
    ("Story", "output"): "a mapping like {path: final.mp4, audio: theme.m4a, crf: 18}",
    ("Story", "endpoints"): "a mapping like {edit: ENDPOINT_ID, animate: ENDPOINT_ID}",
    ("Defaults", "width"): _SIDE,
    ("Defaults", "height"): _SIDE,
    ("Defaults", "fps"): "frames per second, a whole number from 1 to 60 (Wan is trained at 16)",
    ("Defaults", "frames"): _FRAMES,
    ("Defaults", "duration"): _DURATION,
    ("Defaults", "seed"): f"a whole number from 0 to {MAX_SEED}; scene seeds are derived from it",
    ("Defaults", "negative_prompt"): _NEGATIVE,
    ("Defaults", "animate"): "a mapping like {steps: 4, guidance: 1.0}",
    ("Defaults", "edit"): "a mapping like {steps: 8, guidance: 1.0}",
    ("Defaults", "fit"): (
        "how a starting image of another aspect ratio becomes a frame: crop (cover and cut the "
        "overflow), pad (fit inside, black bars) or stretch (distort to fill)"
    ),
    ("Defaults", "color"): (
        "a mapping like {match: reference, strength: 0.8}, or just reference, previous or off"
    ),
    ("ColorSettings", "match"): (
        "reference (match the story's reference frame), previous (match the frame the scene "
        "starts from) or off"
    ),
    ("ColorSettings", "strength"): (
        "a number from 0 to 1: how much of the colour correction to apply (1 = all of it)"
    ),
    ("AnimateSettings", "steps"): (
        "denoising steps from 1 to 100: 4 with the LightX2V LoRA, about 40 without"
    ),
    ("AnimateSettings", "guidance"): (
        "CFG scale of the high-noise expert, from 0 to 20: 1 with the LightX2V LoRA, about 4 "
        "without"
    ),
    ("AnimateSettings", "guidance_2"): (
        "CFG scale of the low-noise expert, from 0 to 20; leave it out to use 'guidance'"
    ),
    ("EditSettings", "steps"): _EDIT_STEPS,
    ("EditSettings", "guidance"): _EDIT_GUIDANCE,
    ("EditSettings", "negative_prompt"): _NEGATIVE,
    ("Edit", "prompt"): (
        "describe the change, e.g. 'same person, now wearing a tuxedo, in a casino' "
        f"(at most {MAX_PROMPT_CHARS} characters)"
    ),
    ("Edit", "images"): (
        f"a list of at most {MAX_EDIT_IMAGES - 1} image paths: an edit takes {MAX_EDIT_IMAGES} "
        "images in all, the frame it edits included"
    ),
    ("Edit", "steps"): _EDIT_STEPS,
    ("Edit", "guidance"): _EDIT_GUIDANCE,
    ("Edit", "negative_prompt"): _NEGATIVE,
    ("Edit", "seed"): _SEED,
    ("Crossfade", "crossfade"): (
        "seconds of overlap with the next clip, more than 0 and at most 5, e.g. {crossfade: 0.5}"
    ),
    ("Scene", "id"): "letters, digits, '-' and '_' (at most 64), starting with a letter or digit",
    ("Scene", "motion"): (
        "describe what moves, e.g. 'she turns and smiles, camera slowly pushes in' "
        f"(at most {MAX_PROMPT_CHARS} characters)"
    ),
    ("Scene", "edit"): "a prompt (edit: now at night) or a mapping like {prompt: ..., images: []}",
    ("Scene", "from"): "'reference', a scene id, '<scene-id>.edit' or an image path",
    ("Scene", "frames"): _FRAMES,
    ("Scene", "duration"): _DURATION,
    ("Scene", "seed"): _SEED,
    ("Scene", "negative_prompt"): _NEGATIVE,
    ("Scene", "animate"): "a mapping like {steps: 4, guidance: 1.0}; left-out fields keep defaults",
    ("Scene", "transition"): "use 'cut' or a mapping like {crossfade: 0.5}",
    ("Scene", "fit"): "crop, pad or stretch for this scene's starting image; leave it out to use "
    "defaults.fit",
    ("Scene", "color"): (
        "a mapping like {match: previous} or {strength: 0.5}, or just reference, previous or "
        "off; left-out fields keep defaults.color"
    ),
    ("Scene", "audio"): "an audio file (relative to the story file) that drives this clip, for a "
    "sound-to-video endpoint, e.g. line.wav",
    ("Output", "path"): "a file name ending in .mp4 (relative to the story file), e.g. final.mp4",
    ("Output", "audio"): "an audio file (relative to the story file), e.g. theme.m4a",
    ("Output", "audio_fade_out"): "seconds of fade-out at the end of the audio, from 0 to 10",
    ("Output", "crf"): "x264 quality, a whole number from 0 to 51: lower is better (18 is great)",
    ("Output", "preset"): "ultrafast, superfast, veryfast, faster, fast, medium, slow or slower",
    ("Endpoints", "edit"): _ENDPOINT,
    ("Endpoints", "animate"): _ENDPOINT,
    ("Endpoints", "base_url"): "the API base URL, e.g. http://gpu-box:8000/v2 (default: RunPod's)",
}
