"""The work directory and the files a render writes: who owns them, and what may be replaced.

A default work dir (``out/<story-name>``) is keyed by a name two stories can share, so it records
which story rendered into it and refuses another. The final video may go anywhere the user says,
so videokit replaces only a file it wrote itself (the manifest holds its hash), never one it did
not make. Paths in ``manifest.json`` are relative to the work dir, so a work dir can be moved.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from videokit.errors import ConfigError, Problem, StoryError
from videokit.pipeline.cache import file_sha256
from videokit.pipeline.manifest import Manifest
from videokit.story.model import Story, slugify
from videokit.story.plan import unwritable_reason

__all__ = ["WorkDir", "link", "story_origin"]


def story_origin(story: Story) -> tuple[Path | None, str | None]:
    """Who a render belongs to: the story file, or for a story built in Python an identity of its
    title and starting image (two notebooks rendering different stories into the same default
    directory are told apart; the same notebook run again is not)."""
    if story.source is not None:
        return story.source.resolve(), None
    reference = Path(os.path.abspath(story.base_dir / str(story.references[0])))
    digest = hashlib.sha256(f"{story.title}\0{reference}".encode()).hexdigest()[:16]
    return None, f"python:{digest}"


class WorkDir:
    """A render's work directory. ``explicit``: the user named it (``--out``, ``out=``)."""

    def __init__(self, path: Path, *, explicit: bool) -> None:
        self.path = path
        self.explicit = explicit

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def relative(self, path: Path) -> str:
        """``path`` as stored in the manifest: relative to the work dir (``..`` if outside it)."""
        return os.path.relpath(os.path.abspath(path), os.path.abspath(self.path))

    def resolve(self, stored: str) -> Path:
        """A path read from the manifest, made absolute."""
        return Path(os.path.abspath(self.path / stored))

    def check(self, story: Story) -> None:
        """Raise :class:`ConfigError` unless this work dir can be used for ``story``; makes nothing.

        It must be creatable and writable. A *default* work dir must also not hold another story's
        render: ``a/story.yaml`` and ``b/story.yaml`` (or two notebooks) would share it, and
        rendering one would prune the other's scenes and replace its final video.
        """
        reason = unwritable_reason(self.path)
        if reason is not None:
            raise ConfigError(
                f"cannot use {self.path} as the work directory: {reason}",
                hint="give a writable directory with --out DIR, or out= in Python "
                "(it is created if missing)",
            )
        if self.explicit:
            return
        manifest = Manifest.load(self.manifest_path)
        source, origin = story_origin(story)
        if source is not None:
            owner = self.resolve(manifest.story) if manifest.story else None
            if (owner is None and manifest.origin is None) or owner == source:
                return
            other = (
                f"another story file, {owner}" if owner is not None else "a story built in Python"
            )
            mine = str(source)
            suggested = self.path.with_name(f"{slugify(source.parent.name)}-{self.path.name}")
        else:
            if manifest.story is None and manifest.origin in (None, origin):
                return
            other = (
                f"the story file {self.resolve(manifest.story)}"
                if manifest.story
                else "another story built in Python"
            )
            mine = f"this story ('{story.title}')"
            suggested = self.path.with_name(f"{self.path.name}-2")
        raise ConfigError(
            f"the default work directory {self.path} holds the render of {other}; rendering "
            f"{mine} there would replace its scenes and final video",
            hint=f"give this story its own directory with --out DIR (out= in Python), e.g. "
            f"--out {suggested}; or delete {self.path} if that story is gone or was moved here",
        )

    def check_output(
        self, output: Path, manifest: Manifest, *, overwrite: bool, story: Story | None = None
    ) -> None:
        """Refuse to replace a file at ``output`` that videokit did not write (unless
        ``overwrite``), and an output outside the story's folder and the work dir that only the
        story file asks for (``story``: the story, when the path came from its file)."""
        if story is not None and story.source is not None:
            allowed = (story.base_dir, self.path)
            if not any(_inside(output, folder) for folder in allowed):
                loc = ("output", "path")
                raise StoryError(
                    [
                        Problem(
                            f"the final video would be written to {output}, outside the story's "
                            f"folder and the work directory {self.path}",
                            file=story.source,
                            line=story.line_of(loc),
                            field="output.path",
                            hint="a story file may only write inside its own folder or the work "
                            "directory: give a path there, or pass the path yourself with "
                            "--output PATH (output= in Python)",
                        )
                    ]
                )
        if overwrite or not output.exists() or self.wrote(output, manifest):
            return
        if output.is_dir():
            raise ConfigError(
                f"the final video's path {output} is a directory",
                hint="give a file name ending in .mp4",
            )
        raise ConfigError(
            f"{output} exists and was not written by videokit; rendering would replace it",
            hint="choose another path (--output PATH, or output.path in the story), move the "
            "file away, or pass --overwrite (overwrite=True in Python) to replace it",
        )

    def wrote(self, output: Path, manifest: Manifest) -> bool:
        """Whether the file at ``output`` is the final video this work dir's manifest records."""
        final = manifest.final
        if final is None:
            return False
        recorded = {self.resolve(final.path), Path(os.path.abspath(final.path))}
        if Path(os.path.abspath(output)) not in recorded:
            return False
        # Manifests before version 3 recorded no hash: the path is all they say.
        return final.sha256 is None or file_sha256(output) in (final.sha256, final.replaces)

    def create(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise ConfigError(
                f"cannot use {self.path} as the work directory: it, or a folder above it, is a "
                "file",
                hint="render into another directory with --out",
            ) from None
        except OSError as exc:
            raise ConfigError(
                f"cannot create the work directory {self.path}: {exc.strerror}",
                hint="render into a writable directory with --out",
            ) from None
        if not os.access(self.path, os.W_OK):
            raise ConfigError(
                f"the work directory {self.path} is not writable",
                hint="render into a writable directory with --out",
            )

    @contextmanager
    def locked(self) -> Iterator[None]:
        # The kernel drops flock locks when a process dies, so a SIGKILLed render never blocks
        # the one that resumes it.
        with (self.path / ".lock").open("w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(
                    f"another videokit render is using {self.path}",
                    hint="wait for it to finish, or render into another directory with --out",
                ) from None
            yield


def _inside(path: Path, folder: Path) -> bool:
    real, root = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([real, root]) == root


def link(source: Path, target: Path) -> Path:
    """Make ``target`` the file ``source`` (a hard link, else a copy), replacing it atomically."""
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)  # another filesystem, or links not supported
    os.replace(tmp, target)
    return target
