"""Shared fixtures: small real images, story files on disk, and an observing backend.

Tests inject a backend instead of patching internals: ``RecordingBackend`` runs the real preview
backend and records every job it was asked to run.
"""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from videokit.backends.base import JobContext, Stage
from videokit.backends.preview import PreviewBackend
from videokit.protocol import AnimateRequest, AnimateResult, EditRequest, EditResult


@pytest.fixture(autouse=True)
def _own_result_store(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every test gets its own user cache dir, so the shared result store of one test never
    serves another (subprocesses inherit it; Settings resolved with ``env=`` fall back to HOME)."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("VIDEOKIT_CACHE_DIR", str(home / ".cache" / "videokit"))


def make_image(
    path: Path, size: tuple[int, int] = (320, 180), color: tuple[int, int, int] = (200, 90, 40)
) -> Path:
    image = Image.new("RGB", size, color)
    # A diagonal gradient, so camera moves and crops are visible in the pixels.
    pixels = image.load()
    assert pixels is not None
    for y in range(0, size[1], 4):
        for x in range(0, size[0], 4):
            pixels[x, y] = ((x * 255) // size[0], (y * 255) // size[1], color[2])
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


@pytest.fixture
def story_dir(tmp_path: Path) -> Path:
    make_image(tmp_path / "ref.png")
    return tmp_path


@pytest.fixture
def write_story(story_dir: Path) -> Callable[..., Path]:
    def write(text: str, name: str = "story.yaml") -> Path:
        path = story_dir / name
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    return write


@dataclass
class RecordingBackend:
    """The real preview backend, observed: every job, and how many ran at once."""

    delay: float = 0.0
    fail: set[str] = field(default_factory=set)
    inner: PreviewBackend = field(default_factory=lambda: PreviewBackend(concurrency=4))
    name: str = "preview"
    calls: list[tuple[Stage, str]] = field(default_factory=list)
    active: int = 0
    max_active: int = 0
    log: list[tuple[str, str, float]] = field(default_factory=list)
    warmed: list[Stage] = field(default_factory=list)

    def identity(self, stage: Stage) -> str:
        return self.inner.identity(stage)

    def identities(self, stage: Stage) -> tuple[str, ...]:
        return (self.identity(stage),)

    def concurrency(self, stage: Stage) -> int:
        return 4

    def check(
        self, stages: Collection[Stage], *, payload_bytes: Mapping[Stage, int] | None = None
    ) -> None:
        self.inner.check(stages, payload_bytes=payload_bytes)

    async def warm_up(self, stage: Stage, ctx: JobContext) -> None:
        self.warmed.append(stage)

    async def _observe(self, stage: Stage, ctx: JobContext) -> None:
        self.calls.append((stage, ctx.scene))
        if ctx.scene in self.fail:
            raise RuntimeError(f"injected failure in {ctx.scene}")
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        self.log.append(("start", ctx.scene, time.monotonic()))
        if self.delay:
            await asyncio.sleep(self.delay)

    def _done(self, ctx: JobContext) -> None:
        self.active -= 1
        self.log.append(("end", ctx.scene, time.monotonic()))

    async def edit(self, request: EditRequest, ctx: JobContext) -> EditResult:
        await self._observe("edit", ctx)
        try:
            return await self.inner.edit(request, ctx)
        finally:
            self._done(ctx)

    async def animate(self, request: AnimateRequest, ctx: JobContext) -> AnimateResult:
        await self._observe("animate", ctx)
        try:
            return await self.inner.animate(request, ctx)
        finally:
            self._done(ctx)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def scenes(self, stage: Stage | None = None) -> list[str]:
        return [scene for s, scene in self.calls if stage is None or s == stage]


@pytest.fixture
def recording() -> RecordingBackend:
    return RecordingBackend()
