"""The base of both diffusers engines: the job thread, the job record, memory and closing.

A subclass (:class:`~videokit.worker.wan.WanEngine`, :class:`~videokit.worker.qwen.QwenEngine`)
names its stage, its log event and its modules, and implements the job itself; everything a job
goes through around the pipeline call (queueing on the one thread, cancellation with a bounded
wait, the JSON record with status and timings, memory release, admission) is here, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, TypeVar

from videokit.backends.base import Stage
from videokit.errors import ConfigError
from videokit.worker.common import (
    LogFn,
    emit,
    log_to_stderr,
    ms_since,
    release_failed_call,
    release_memory,
)
from videokit.worker.diffusers_engine.job_thread import JobThread
from videokit.worker.diffusers_engine.memory import GIB, MemoryModel, module_bytes
from videokit.worker.diffusers_engine.options import EngineOptions
from videokit.worker.diffusers_engine.phases import PhaseTimer
from videokit.worker.diffusers_engine.speedups import (
    AttentionChoice,
    apply_fp8,
    compile_blocks,
    reset_attention,
    set_attention,
)
from videokit.worker.errors import JobInputError, is_cuda_oom

__all__ = ["DiffusersEngine", "job_status"]

_T = TypeVar("_T")

#: What a CUDA job may plan on of the card's total: the CUDA context, cuBLAS workspaces and the
#: allocator's fragmentation live outside what torch reports as allocated.
_CUDA_HEADROOM = 0.95


def job_status(exc: BaseException) -> str:
    """The ``status`` of a failed job's record."""
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, JobInputError):
        return "invalid_input"
    return "oom" if is_cuda_oom(exc) else "error"


class DiffusersEngine:
    """A loaded diffusers pipeline serving one stage's jobs, one at a time, on one thread."""

    #: The stage this engine serves, and the prefix of its log events (``<prefix>.job``).
    stage: ClassVar[Stage]
    event: ClassVar[str]

    def __init__(
        self,
        pipe: Any,
        *,
        device: str,
        options: EngineOptions | None = None,
        name: str = "diffusers",
        log: LogFn | None = None,
    ) -> None:
        self.pipeline = pipe
        self.name = name
        self.log: LogFn = log or log_to_stderr
        self.options = options or EngineOptions()
        self.device = device
        self.cuda = device.startswith("cuda")
        self.memory: MemoryModel | None = None
        #: How long loading took, and the warm-up step within it (set by the loader): a warm-up
        #: job's answer reports them, so a cold start can be split from outside the worker.
        self.load_ms: int | None = None
        self.warmup_ms: int | None = None
        self._thread = JobThread(f"videokit-{self.stage}")

    # -- what a subclass names ---------------------------------------------------------------------

    def text_encoders(self) -> list[Any]:
        return [getattr(self.pipeline, "text_encoder", None)]

    def transformers(self) -> list[Any]:
        return [getattr(self.pipeline, "transformer", None)]

    def plan_memory(self) -> None:
        """Build :attr:`memory` from the loaded pipeline's configs (no capacity: leave None)."""

    def warm_up(self) -> dict[str, Any]:
        """Run one real denoising step; return the load log's part."""
        raise NotImplementedError

    # -- load time ---------------------------------------------------------------------------------

    def prepare(self) -> dict[str, Any]:
        """After loading (and fusing LoRAs): FP8, the attention kernel, compilation, the memory
        plan and the warm-up step, in that order. Returns the load log's fields.

        A non-native attention kernel that fails in the warm-up step is replaced by the native
        one (and the log says why); a failure under compilation is a ConfigError at load.
        """
        models = [m for m in self.transformers() if m is not None]
        fp8 = apply_fp8(models, self.options, self.device)
        attention = set_attention(models, self.options.attention, self.device)
        compiled = compile_blocks(models, self.options)
        self.plan_memory()
        warmup = None
        if self.options.warmup == "on":
            try:
                warmup = self.warm_up()
            except Exception as exc:
                if compiled:
                    raise ConfigError(
                        f"{self.options.source('compile')}=blocks: the warm-up step failed "
                        f"under torch.compile ({type(exc).__name__}: {str(exc)[:300]})",
                        hint="set VIDEOKIT_COMPILE=off",
                    ) from exc
                if attention.used == "native" or is_cuda_oom(exc):
                    raise
                reset_attention(models)
                reason = f"failed in the warm-up step: {type(exc).__name__}: {str(exc)[:200]}"
                attention = AttentionChoice(attention.requested, "native", reason)
                warmup = self.warm_up()
        self.warmup_ms = None if warmup is None else int(warmup["ms"])
        return {
            "options": self.options.summary() or None,
            "attention": attention.log(),
            "fp8": fp8,
            "compiled": compiled or None,
            "warmup": warmup,
            "memory": self.memory_log(),
        }

    # -- jobs --------------------------------------------------------------------------------------

    def phase_timer(self) -> PhaseTimer:
        import torch

        cuda = torch.device(self.device) if self.cuda else None
        return PhaseTimer(self.text_encoders(), self.transformers(), cuda)

    async def run_job(
        self, record: dict[str, Any], work: Callable[[Any], _T], *, finish: Callable[[_T], None]
    ) -> _T:
        """Run ``work(cancel_event)`` on the job thread and log ``record`` once, with its status.

        ``finish`` adds the result's fields to the record. The record is copied when written: a
        cancelled job's thread may still be adding timings to it.
        """
        if self._thread.closed or self.pipeline is None:
            raise RuntimeError(f"this {self.stage} engine was closed")
        record.setdefault("status", "running")
        started = time.perf_counter()
        try:
            result = await self._thread.run(work)
        except BaseException as exc:
            record["status"] = job_status(exc)
            record["error_type"] = type(exc).__name__
            record.setdefault("timings_ms", {})
            record["job_ms"] = ms_since(started)
            with contextlib.suppress(Exception):
                emit(self.log, dict(record))
            raise
        record["status"] = "ok"
        record["job_ms"] = ms_since(started)
        finish(result)
        emit(self.log, dict(record))
        return result

    def call(self, work: Callable[[Any], _T]) -> _T:
        """Run ``work`` on the job thread and wait (load-time work, benchmarks, tests)."""
        return self._thread.call(work)

    def pipeline_call(self, call: Callable[[], _T]) -> _T:
        """``call()`` (the pipeline), freeing what a failure leaves behind before it propagates."""
        try:
            return call()
        except BaseException as exc:
            # Before the error travels on: its traceback holds the job's tensors (a CUDA OOM is
            # retried, maybe on this same worker).
            release_failed_call(exc, self.cuda)
            raise

    def reset_peak(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats(torch.device(self.device))

    def peak_bytes(self) -> int | None:
        if not self.cuda:
            return None
        import torch

        return int(torch.cuda.max_memory_allocated(torch.device(self.device)))

    # -- memory ------------------------------------------------------------------------------------

    def capacity(self) -> tuple[int, str] | None:
        """The bytes jobs may plan on and the device's name; None: no admission check."""
        limit = self.options.memory_limit
        if limit is None:
            return None
        if limit != "auto":
            return limit, f"{self.options.source('memory_limit')}"
        if not self.cuda:
            return None  # host memory is the OS's to manage
        import torch

        props = torch.cuda.get_device_properties(torch.device(self.device))
        return int(props.total_memory * _CUDA_HEADROOM), str(props.name)

    def resident_bytes(self, modules: Iterable[Any]) -> int:
        """The weights on the device: torch's own count on CUDA, the modules' sizes elsewhere."""
        if self.cuda:
            import torch

            return int(torch.cuda.memory_allocated(torch.device(self.device)))
        return module_bytes(modules)

    def calibrate(self, warmup_peak: int | None, warmup_need: int) -> None:
        """Take the warm-up step's measured peak as the overhead above the estimate, if higher."""
        if self.memory is None or warmup_peak is None:
            return
        self.memory.overhead = max(0, warmup_peak - warmup_need)

    def memory_log(self) -> dict[str, Any] | None:
        if self.memory is None:
            return None
        m = self.memory
        return {
            "capacity_gib": round(m.capacity / GIB, 2),
            "resident_gib": round(m.resident / GIB, 2),
            "overhead_gib": round(m.overhead / GIB, 2),
            "per_token_bytes": m.per_token,
        }

    # -- closing -----------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop a running job at its next step, drop queued ones, free the pipeline's memory."""
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        self._thread.close(self._release)

    async def wait_idle(self) -> None:
        """Return once no pipeline call is running (a cancelled job's thread included)."""
        await self._thread.wait_idle()

    def _release(self) -> None:
        self.pipeline = None
        release_memory(self.cuda)

    def refuse_stage(self, stage: Stage) -> ConfigError:
        other = "Qwen-Image-Edit" if stage == "edit" else "Wan2.2"
        return ConfigError(
            f"this worker's engine serves {self.stage} jobs only, not {stage}",
            hint=f"send {stage} jobs to a worker loaded for the {stage} stage ({other})",
        )
