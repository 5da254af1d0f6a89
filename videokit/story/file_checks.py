"""Checking the files a story names, before anything is submitted.

They must exist and decode as images or audio (decompression bombs are refused from the header,
before any pixel is decoded), and the final video must be writable where the story says. What
the default fit, crop, will cut from a starting image is said here too, as it needs its size.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from videokit.errors import VideoKitError
from videokit.story.model import Story
from videokit.story.problem_collector import ProblemCollector
from videokit.story.scene_plan import ScenePlan, Source, resolve_path

__all__ = ["VIDEO_SUFFIXES", "check_story_files", "unwritable_reason", "warn_crop"]

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov")


def check_story_files(
    story: Story,
    references: list[Path],
    sources: Sequence[Source],
    audio: Path | None,
    output: Path | None,
    errors: ProblemCollector,
) -> dict[Path, tuple[int, int]]:
    """Check every file the story names; return the (width, height) of each readable image."""
    from videokit.media.images import ImageRejected, inspect_image
    from videokit.media.probe import probe_audio

    checked: dict[Path, tuple[str | None, str | None]] = {}
    sizes: dict[Path, tuple[int, int]] = {}

    def check_image(path: Path, loc: tuple[str | int, ...], scene: str | None = None) -> None:
        if path not in checked:
            problem, hint = _file_problem(path, story.base_dir)
            if problem is None:
                try:
                    # decode=True: a truncated JPEG, or a PNG whose pixel data stops short, has a
                    # valid header and must fail here, not halfway through a paid render. The
                    # header's pixel count is checked first, so a bomb is never decoded.
                    info = inspect_image(path, decode=True)
                    sizes[path] = (info.width, info.height)
                except ImageRejected as exc:
                    problem = f"{_shown(path)}: {exc.reason}"
                    hint = exc.hint or "give a PNG, JPEG or WebP image"
            checked[path] = (problem, hint)
        problem, hint = checked[path]
        if problem is not None:
            errors.add(problem, loc, scene=scene, hint=hint)

    ref_loc: tuple[str | int, ...] = ("reference",)
    multiple = isinstance(story.reference, list)
    for i, path in enumerate(references):
        check_image(path, (*ref_loc, i) if multiple else ref_loc)
    # Every scene, a duplicate id's too: its files are as wrong as anyone's.
    for i, (scene, source) in enumerate(zip(story.scenes, sources, strict=True)):
        for j, image in enumerate(scene.edit.images if scene.edit is not None else []):
            check_image(resolve_path(story, image), ("scenes", i, "edit", "images", j), scene.id)
        if source.kind == "file" and source.path is not None:
            check_image(source.path, ("scenes", i, "from"), scene.id)

    def check_audio(path: Path, loc: tuple[str | int, ...], scene: str | None = None) -> None:
        problem, hint = _file_problem(path, story.base_dir)
        if problem is None:
            try:
                probe_audio(path)
            except (VideoKitError, OSError, ValueError) as exc:
                reason = getattr(exc, "message", str(exc)).splitlines()[0]
                problem = f"{_shown(path)}: not an audio file ({reason})"
                hint = "give an audio file: M4A, MP3, WAV, FLAC, ..."
        if problem is not None:
            errors.add(problem, loc, scene=scene, hint=hint)

    for i, scene in enumerate(story.scenes):
        if scene.audio is not None:
            check_audio(resolve_path(story, scene.audio), ("scenes", i, "audio"), scene.id)
    if audio is not None:
        check_audio(audio, ("output", "audio"))
    if output is not None:
        _check_output(output, errors)
    return sizes


def warn_crop(
    story: Story,
    plans: dict[str, ScenePlan],
    references: list[Path],
    sizes: Mapping[Path, tuple[int, int]],
    errors: ProblemCollector,
) -> None:
    """Say what the default fit, crop, will cut from a starting image of another aspect ratio.

    Said once per image, at the field that names it, unless the user chose a fit: an explicit
    ``fit: crop`` means the loss is known and wanted.
    """
    from videokit.media.images import crop_loss

    width, height = story.defaults.width, story.defaults.height
    chosen = "fit" in story.defaults.model_fields_set
    warned: set[Path] = set()
    for plan in plans.values():
        scene = story.scenes[plan.index]
        if chosen or scene.fit is not None or plan.fit != "crop":
            continue
        loc: tuple[str | int, ...]
        if plan.source.kind == "reference" and references:
            path = references[0]
            loc = ("reference", 0) if isinstance(story.reference, list) else ("reference",)
        elif plan.source.kind == "file" and plan.source.path is not None:
            path, loc = plan.source.path, ("scenes", plan.index, "from")
        else:
            continue
        if path in warned or path not in sizes:
            continue
        warned.add(path)
        src_w, src_h = sizes[path]
        loss = crop_loss(src_w, src_h, width, height)
        if not loss.pixels:  # the same aspect ratio, or less than a pixel off: only scaled
            continue
        share = f"{loss.fraction:.0%}" if loss.fraction >= 0.01 else "under 1%"
        errors.warn(
            f"{_shown(path)} is {src_w}x{src_h} and frames are {width}x{height}: it will be "
            f"cropped, losing {loss.pixels} px from the {loss.sides} each ({share} of the "
            "picture)",
            loc,
            hint="set fit: pad (black bars) or fit: stretch in defaults or on this scene, or crop "
            "the image yourself; fit: crop silences this",
        )


def _check_output(output: Path, errors: ProblemCollector) -> None:
    loc = ("output", "path")
    if output.is_dir():
        errors.add(f"{_shown(output)} is a directory", loc, hint="give a file name, e.g. final.mp4")
    elif output.suffix.lower() not in VIDEO_SUFFIXES:
        errors.add(
            f"{output.name}: the final video is H.264 in an MP4 container",
            loc,
            hint="end the file name with .mp4",
        )
    else:
        reason = unwritable_reason(output.parent)
        if reason is not None:
            errors.add(
                f"the final video cannot be written to {_shown(output)}: {reason}",
                loc,
                hint="give a path in a folder you can write to (relative paths start at the "
                "story file's folder)",
            )


def unwritable_reason(directory: Path) -> str | None:
    """Why files cannot be created in ``directory`` (made if missing), or ``None`` if they can.

    Creates nothing that outlives the call: the nearest existing ancestor must be a directory,
    and an anonymous file is created and dropped in it, because permission bits do not tell
    (root passes every access check, yet cannot create files in /proc or on a read-only mount).
    """
    directory = Path(os.path.abspath(directory))
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{_shown(existing)} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"no permission to create files in {_shown(existing)}"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        return f"files cannot be created in {_shown(existing)} ({exc.strerror or exc})"
    return None


def _shown(path: Path) -> str:
    """A path as short as it can be and still be found from the current directory."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _file_problem(path: Path, base_dir: Path) -> tuple[str | None, str | None]:
    if not path.exists():
        return (
            f"{_shown(path)}: file not found",
            f"relative paths start at the story file's folder ({_shown(base_dir) or '.'})",
        )
    if path.is_dir():
        return f"{_shown(path)}: is a directory, not a file", "give the path of a file inside it"
    if not os.access(path, os.R_OK):
        return f"{_shown(path)}: not readable (permission denied)", "check the file's permissions"
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        return f"{_shown(path)}: cannot be read ({exc.strerror})", None
    return None, None
