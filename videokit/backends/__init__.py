"""Backends: where edit and animate jobs run. ``preview`` is the embedded CPU animatic."""

from __future__ import annotations

from videokit.backends.base import Backend, JobAttempt, JobContext, Stage
from videokit.config import Settings
from videokit.errors import ConfigError

__all__ = ["BACKENDS", "Backend", "JobAttempt", "JobContext", "Stage", "create_backend"]

BACKENDS = ("preview",)


def create_backend(name: str | None, settings: Settings) -> Backend:
    """The backend called ``name`` (default: the settings' choice, else ``preview``)."""
    name = name or settings.backend or "preview"
    if name == "preview":
        from videokit.backends.preview import PreviewBackend

        return PreviewBackend(concurrency=settings.concurrency)
    raise ConfigError(
        f"unknown backend '{name}'",
        hint=f"choose one of: {', '.join(BACKENDS)} (set with --backend or VIDEOKIT_BACKEND)",
    )
