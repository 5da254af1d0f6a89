"""What a render hands back: :class:`RenderResult` and one :class:`SceneOutput` per scene."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videokit.errors import VideoKitError
from videokit.media.clips import open_clip

__all__ = ["RenderResult", "SceneOutput"]


@dataclass(frozen=True)
class SceneOutput:
    """What one scene produced. Paths are absolute and point into the work directory."""

    id: str
    clip: Path
    first_frame: Path
    last_frame: Path
    edited_frame: Path | None
    seed: int
    frames: int
    fps: int
    cached: bool
    seconds: float
    cost_usd: float
    job_ids: dict[str, str] = field(default_factory=dict)

    def open_clip(self, *, audio: bool = False) -> AbstractContextManager[Any]:
        """The clip as a frame-exact moviepy ``VideoFileClip``, closed when the block ends."""
        return open_clip(self.clip, frames=self.frames, fps=self.fps, audio=audio)


@dataclass(frozen=True)
class RenderResult:
    """The outcome of :meth:`Pipeline.run`. Paths are absolute."""

    workdir: Path
    final_video: Path | None
    contact_sheet: Path | None
    manifest: Path
    scenes: dict[str, SceneOutput]
    frames: int | None
    fps: int
    seconds: float
    cost_usd: float
    # Worth a look although the render succeeded; the CLI prints them.
    warnings: list[str] = field(default_factory=list)
    # Scenes left as they were: with ``only``, scenes whose inputs this render changed and that
    # no cached result matches any more (rendering without ``only`` updates them).
    stale: list[str] = field(default_factory=list)
    # The work dir's report.html (None if it could not be written: see ``warnings``).
    report: Path | None = None

    def open_video(self) -> AbstractContextManager[Any]:
        """The final video as a frame-exact moviepy ``VideoFileClip`` (with its audio)::

        with result.open_video() as clip:
            clip.subclipped(0, 2).write_videofile("teaser.mp4", audio_codec="aac")
        """
        if self.final_video is None or self.frames is None:
            raise VideoKitError(
                "this render made no final video (some scenes on the timeline are not current)",
                hint="render without --only / only= to bring every scene up to date and stitch",
            )
        return open_clip(self.final_video, frames=self.frames, fps=self.fps)

    @property
    def rendered(self) -> list[str]:
        """Scenes this render made (it paid for at least one of their jobs)."""
        return [s.id for s in self.scenes.values() if not s.cached]

    @property
    def cached(self) -> list[str]:
        return [s.id for s in self.scenes.values() if s.cached]
