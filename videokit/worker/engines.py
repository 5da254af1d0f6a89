"""The engine registry: what actually runs a worker's jobs.

An :class:`Engine` is the part of the :class:`~videokit.backends.base.Backend` protocol a worker
needs: ``identity``, ``edit``/``animate`` on the wire models, and ``aclose``. It is loaded once per
worker process, before the first job, so a warmup job only has to confirm it is there.

Engines are looked up by name in :data:`ENGINES`, a table of loader callables:

* ``preview``: the CPU animatic.
* ``diffusers``: the real models (Qwen-Image-Edit for edit, Wan2.2 I2V for animate), in
  :mod:`videokit.worker.qwen` and :mod:`videokit.worker.wan`. torch and diffusers are imported
  only when one is loaded, so the client never needs them.
* ``tiny``: the same pipeline classes and code paths with tiny random weights built in code, for
  tests and for exercising the whole GPU path on a CPU.

**Benchmark padding.** ``min_job_seconds`` (env ``VIDEOKIT_ENGINE_MIN_SECONDS``) makes every job
take at least that long, by ``asyncio.sleep`` after the real work: benchmarks use it to make the
preview engine behave like a GPU that needs, say, 2 s per job (queueing, concurrency and
cancellation then look like production, at no GPU cost). The padding is an await, so a cancelled
job stops during it; the reported ``inference_ms`` includes it, as a slow GPU's would.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

from videokit.backends.base import JobContext, Stage
from videokit.errors import ConfigError
from videokit.protocol import AnimateRequest, AnimateResult, EditRequest, EditResult
from videokit.worker.diffusers_engine.options import OPTION_NAMES

__all__ = [
    "ENGINES",
    "Engine",
    "EngineLoader",
    "EngineSpec",
    "PaddedEngine",
    "engine_from_env",
    "load_engine",
]


@runtime_checkable
class Engine(Protocol):
    """What a worker runs jobs on (a subset of :class:`~videokit.backends.base.Backend`)."""

    name: str

    def identity(self, stage: Stage) -> str: ...

    async def edit(self, request: EditRequest, ctx: JobContext) -> EditResult: ...

    async def animate(self, request: AnimateRequest, ctx: JobContext) -> AnimateResult: ...

    async def aclose(self) -> None: ...


class EngineLoader(Protocol):
    """Builds an engine for ``stage`` from its options (already checked against the spec)."""

    def __call__(self, stage: Stage, /, **options: object) -> Engine: ...


@dataclass(frozen=True)
class EngineSpec:
    """A registered engine: how to load it, which options it takes, and a line for error lists."""

    loader: EngineLoader
    options: tuple[str, ...]
    description: str


def _load_preview(stage: Stage, /, **options: object) -> Engine:
    from videokit.backends.preview import PreviewBackend

    concurrency = options.get("concurrency")
    if concurrency is not None and not isinstance(concurrency, int):
        raise ConfigError(f"engine 'preview': concurrency must be an integer, got {concurrency!r}")
    return PreviewBackend(concurrency=concurrency)


def _model_module(stage: Stage) -> ModelLoader:
    if stage == "edit":
        from videokit.worker import qwen

        return qwen.load_engine
    from videokit.worker import wan

    return wan.load_engine


class ModelLoader(Protocol):
    def __call__(self, *, tiny: bool, **options: object) -> Engine: ...


def _load_diffusers(stage: Stage, /, **options: object) -> Engine:
    return _model_module(stage)(tiny=False, **options)


def _load_tiny(stage: Stage, /, **options: object) -> Engine:
    return _model_module(stage)(tiny=True, **options)


_MODEL_OPTIONS = (
    "model",
    "model_dir",
    "model_dirs",
    "mode",
    "dtype",
    "offload",
    "device",
    "env",
    "hub",
    *OPTION_NAMES,
)

#: Engines by name. Later engines register here (``ENGINES["diffusers"] = EngineSpec(...)``) from
#: their own modules; the handler only ever sees the :class:`Engine` that :func:`load_engine` gives.
ENGINES: dict[str, EngineSpec] = {
    "preview": EngineSpec(
        loader=_load_preview,
        options=("concurrency",),
        description="CPU animatic: storyboard cards and camera moves, no GPU or weights",
    ),
    "diffusers": EngineSpec(
        loader=_load_diffusers,
        options=_MODEL_OPTIONS,
        description="the real models with diffusers: Qwen-Image-Edit / Wan2.2 I2V (GPU)",
    ),
    "tiny": EngineSpec(
        loader=_load_tiny,
        options=("device", "env", *OPTION_NAMES),
        description="the real pipeline classes with tiny random weights (CPU, tests)",
    ),
}

# Options every engine takes; load_engine applies them around whatever the loader returns.
_COMMON_OPTIONS = ("min_job_seconds",)


def load_engine(stage: Stage, name: str, **options: object) -> Engine:
    """Load the engine called ``name`` for ``stage``.

    ``min_job_seconds`` (any engine): pad every job to at least this long (see the module
    docstring). Other options go to the engine's loader; unknown names or options are a
    :class:`~videokit.errors.ConfigError` that lists what is available.
    """
    spec = ENGINES.get(name)
    if spec is None:
        available = ", ".join(f"{key} ({ENGINES[key].description})" for key in sorted(ENGINES))
        raise ConfigError(
            f"unknown engine {name!r}",
            hint=f"available engines: {available} (set with VIDEOKIT_ENGINE)",
        )
    unknown = sorted(set(options) - set(spec.options) - set(_COMMON_OPTIONS))
    if unknown:
        accepted = ", ".join((*spec.options, *_COMMON_OPTIONS))
        raise ConfigError(
            f"engine {name!r} has no option {', '.join(map(repr, unknown))}",
            hint=f"its options are: {accepted}",
        )
    min_seconds = _min_seconds(options.pop("min_job_seconds", None))
    engine = spec.loader(stage, **options)
    if min_seconds > 0:
        return PaddedEngine(engine, min_seconds)
    return engine


def engine_from_env(stage: Stage, env: Mapping[str, str] | None = None) -> Engine:
    """The engine the worker environment asks for.

    ``VIDEOKIT_ENGINE`` (default ``preview``) and ``VIDEOKIT_ENGINE_MIN_SECONDS``. Read when
    called (never at import), so tests pass ``env=`` instead of patching ``os.environ``.
    """
    env = os.environ if env is None else env
    name = env.get("VIDEOKIT_ENGINE", "").strip() or "preview"
    options: dict[str, object] = {}
    padding = env.get("VIDEOKIT_ENGINE_MIN_SECONDS", "").strip()
    if padding:
        try:
            options["min_job_seconds"] = float(padding)
        except ValueError:
            raise ConfigError(
                f"VIDEOKIT_ENGINE_MIN_SECONDS must be a number of seconds, got {padding!r}"
            ) from None
    return load_engine(stage, name, **options)


def _min_seconds(value: object) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"min_job_seconds must be a number of seconds, got {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"min_job_seconds must be a finite number >= 0, got {value!r}")
    return seconds


_R = TypeVar("_R", EditResult, AnimateResult)


class PaddedEngine:
    """Wraps an engine so that each job takes at least ``min_seconds`` (benchmark emulation)."""

    def __init__(self, inner: Engine, min_seconds: float) -> None:
        self.inner = inner
        self.min_seconds = min_seconds
        self.name = inner.name

    def identity(self, stage: Stage) -> str:
        # Same pixels as the inner engine, so the same identity: padding is timing only.
        return self.inner.identity(stage)

    async def edit(self, request: EditRequest, ctx: JobContext) -> EditResult:
        started = time.perf_counter()
        return await self._pad(await self.inner.edit(request, ctx), started)

    async def animate(self, request: AnimateRequest, ctx: JobContext) -> AnimateResult:
        started = time.perf_counter()
        return await self._pad(await self.inner.animate(request, ctx), started)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def _pad(self, result: _R, started: float) -> _R:
        remaining = self.min_seconds - (time.perf_counter() - started)
        if remaining > 0:
            await asyncio.sleep(remaining)
        elapsed_ms = round((time.perf_counter() - started) * 1000)
        return result.model_copy(update={"inference_ms": max(result.inference_ms, elapsed_ms)})
