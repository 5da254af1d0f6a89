"""The exception tree: every error videokit raises on purpose derives from VideoKitError.

Messages follow one pattern, so that the CLI can print them without a traceback and a user
can act on them: *what* was wrong, *where* (file, line, field path, scene id) and *how to fix it*.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BudgetError",
    "BudgetSpentError",
    "ConfigError",
    "EndpointError",
    "FFmpegError",
    "JobCancelledError",
    "JobFailedError",
    "JobTimeoutError",
    "Problem",
    "RenderError",
    "StoryError",
    "VideoKitError",
]


class VideoKitError(Exception):
    """Root of every error videokit raises on purpose.

    ``exit_code`` is what the CLI exits with when this error reaches it.
    """

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a story, located as precisely as the input allows."""

    message: str
    file: Path | None = None
    line: int | None = None
    field: str | None = None
    scene: str | None = None
    hint: str | None = None

    def location(self) -> str:
        parts: list[str] = []
        if self.file is not None:
            parts.append(f"{self.file}:{self.line}" if self.line else str(self.file))
        elif self.line is not None:
            parts.append(f"line {self.line}")
        if self.scene is not None:
            parts.append(f"scene '{self.scene}'")
        if self.field:
            parts.append(self.field)
        return ", ".join(parts)

    def render(self) -> str:
        where = self.location()
        text = f"{where}: {self.message}" if where else self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class StoryError(VideoKitError):
    """The story is invalid. Raised before any job is submitted; carries every problem found."""

    exit_code = 2

    def __init__(self, problems: Sequence[Problem] | str, *, hint: str | None = None) -> None:
        if isinstance(problems, str):
            problems = [Problem(problems, hint=hint)]
        self.problems: list[Problem] = list(problems)
        count = len(self.problems)
        head = "invalid story" if count == 1 else f"invalid story ({count} problems)"
        body = "\n".join(f"- {p.render()}" for p in self.problems)
        super().__init__(f"{head}:\n{body}")

    def __str__(self) -> str:
        return self.message


class ConfigError(VideoKitError):
    """Configuration is missing or contradictory (backend, endpoints, credentials, paths)."""

    exit_code = 2


class FFmpegError(VideoKitError):
    """ffmpeg failed; the message carries the tail of its log."""


class EndpointError(VideoKitError):
    """An endpoint answered with an error that retrying will not fix."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        job_id: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.job_id = job_id


class JobFailedError(VideoKitError):
    """A job ran and failed on the worker."""

    def __init__(
        self,
        message: str,
        *,
        job_id: str | None = None,
        scene: str | None = None,
        transient: bool = False,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.job_id = job_id
        self.scene = scene
        self.transient = transient


class JobTimeoutError(VideoKitError):
    """A job did not finish before its deadline (it was cancelled remotely first)."""

    def __init__(self, message: str, *, job_id: str | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.job_id = job_id


class JobCancelledError(VideoKitError):
    """A job was cancelled (by the user, or by the endpoint)."""

    exit_code = 130


class BudgetError(VideoKitError):
    """The render would cost more than its budget (``--max-cost``): refused before any job."""

    exit_code = 2


class BudgetSpentError(VideoKitError):
    """The budget ran out during a render: no further job was submitted (the ones running were
    left to finish); everything finished is cached."""


class RenderError(VideoKitError):
    """One or more scenes failed; the others finished and were cached."""

    def __init__(self, failures: dict[str, BaseException]) -> None:
        self.failures = failures
        lines = [f"- scene '{scene}': {err}" for scene, err in failures.items()]
        super().__init__(
            f"{len(failures)} scene(s) failed:\n" + "\n".join(lines),
            hint="finished scenes are cached; run the same command again to retry only these",
        )
