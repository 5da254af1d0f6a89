"""Small pieces the worker's engines (:mod:`~videokit.worker.qwen`, :mod:`~videokit.worker.wan`)
and its job handler (:mod:`~videokit.worker.handler`) share.

Only what behaves *identically* in every user lives here: the JSON log-line format, the stderr log
sink, engine-option checks, the exception that unwinds a cancelled pipeline, thread-safe progress
reports, inline-image decoding, dtype names, device selection, the search for a complete model
directory, Hub downloads, quiet library output, and memory release. What merely looks alike stays
with its engine (the phase timers measure different phases; option defaults and file tables
differ per engine on purpose).

Importing this module never imports torch: the edit engine parses its settings, and the handler
serves the preview engine, without it. Functions that need torch import it when called.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

from videokit.errors import ConfigError
from videokit.protocol import MediaInput
from videokit.worker.errors import JobInputError

if TYPE_CHECKING:
    import torch

__all__ = [
    "DTYPE_NAMES",
    "LogFn",
    "PipelineCancelled",
    "ProgressFn",
    "decode_media",
    "emit",
    "env_flag",
    "env_option",
    "env_text",
    "inline_bytes",
    "json_line",
    "log_option",
    "log_to_stderr",
    "ms_since",
    "parse_device",
    "quiet_progress_bars",
    "raise_if_cancelled",
    "reject_unknown_options",
    "release_failed_call",
    "release_memory",
    "require_device",
    "threadsafe_progress",
    "torch_dtype",
]

#: A log sink: receives one finished JSON line at a time.
LogFn = Callable[[str], None]
#: A progress report: a fraction in [0, 1] and an optional message.
ProgressFn = Callable[[float, str | None], None]

#: The dtype names the engines accept (``VIDEOKIT_DTYPE``), in the order error messages list them,
#: and the torch attribute each stands for. Strings, so that no torch import is needed to check a
#: setting.
DTYPE_NAMES: Mapping[str, str] = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


# -- logging ---------------------------------------------------------------------------------------


def json_line(record: Mapping[str, Any], *, omit_empty: bool = False) -> str:
    """``record`` as one compact JSON line, without its ``None`` values.

    ``omit_empty`` also drops empty lists and dicts (the handler's job record has many fields
    that stay empty for most jobs). Compact separators and raw UTF-8 keep every worker log line in
    the same greppable, one-record-per-line format.
    """
    if omit_empty:
        kept = {key: value for key, value in record.items() if value not in (None, [], {})}
    else:
        kept = {key: value for key, value in record.items() if value is not None}
    return json.dumps(kept, ensure_ascii=False, separators=(",", ":"))


def emit(log: LogFn, record: Mapping[str, Any]) -> None:
    """Write ``record`` to ``log`` as a :func:`json_line`; an exception from ``log`` is dropped."""
    line = json_line(record)
    # A broken log sink must not fail a job or a load.
    with contextlib.suppress(Exception):
        log(line)


def log_to_stderr(line: str) -> None:
    """The default log sink: stderr, flushed at once (a worker's logs are read live)."""
    print(line, file=sys.stderr, flush=True)


def ms_since(started: float) -> int:
    """Whole milliseconds since ``started``, a :func:`time.perf_counter` reading."""
    return round((time.perf_counter() - started) * 1000)


# -- engine options --------------------------------------------------------------------------------
# The loaders' parameters are typed ``object`` (they are ModelLoaders, fed from configuration), so
# the values are checked here rather than trusted.


def reject_unknown_options(
    engine: str, unknown: Mapping[str, object], known: Iterable[str]
) -> None:
    """ConfigError naming every option in ``unknown`` and the ``known`` ones, if any was given."""
    if unknown:
        raise ConfigError(
            f"the {engine} engine has no option {', '.join(map(repr, sorted(unknown)))}",
            hint=f"its options are: {', '.join(known)}",
        )


def env_option(env: object) -> Mapping[str, str]:
    """The ``env`` engine option: a mapping, or None for ``os.environ`` (read when called)."""
    if env is None:
        return os.environ
    if not isinstance(env, Mapping):
        raise ConfigError(f"engine option 'env' must be a mapping, got {type(env).__name__}")
    return cast(Mapping[str, str], env)


def log_option(log: object) -> LogFn:
    """The ``log`` engine option: a callable, or None for :func:`log_to_stderr`."""
    if log is None:
        return log_to_stderr
    if not callable(log):
        raise ConfigError(f"engine option 'log' must be callable, got {type(log).__name__}")
    return cast(LogFn, log)


def env_text(env: Mapping[str, str], name: str) -> str | None:
    """The variable ``name`` stripped, or None when it is unset or blank (blank means unset)."""
    return env.get(name, "").strip() or None


def env_flag(env: Mapping[str, str], name: str, *, true: Collection[str]) -> bool:
    """Whether the variable ``name``, stripped and lower-cased, is one of ``true``.

    Each caller names its own true values: the engines accept different spellings today, and
    changing which ones would change what an existing deployment's setting means.
    """
    return env.get(name, "").strip().lower() in true


# -- jobs ------------------------------------------------------------------------------------------


class PipelineCancelled(Exception):
    """Raised in a pipeline thread (by the step callback) to unwind a job that was cancelled.

    diffusers offers no way to stop a pipeline call from outside; an exception from
    ``callback_on_step_end`` is the only exit between steps. Private to the engines: each turns
    it back into :class:`asyncio.CancelledError` (or lets the cancelled caller's own one stand).
    """


def raise_if_cancelled(cancel: threading.Event) -> None:
    """Raise :class:`PipelineCancelled` if ``cancel`` is set (call between units of work)."""
    if cancel.is_set():
        raise PipelineCancelled


def threadsafe_progress(loop: asyncio.AbstractEventLoop, on_progress: ProgressFn) -> ProgressFn:
    """A progress function for a worker thread that calls ``on_progress`` on ``loop``'s thread.

    Progress callbacks belong to the loop (they may touch loop-bound state). Once the loop is
    closed nobody listens any more, and reports are dropped instead of failing the job.
    """

    def progress(fraction: float, message: str | None) -> None:
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(on_progress, fraction, message)

    return progress


def decode_media(media: MediaInput, label: str) -> bytes:
    """The bytes of an inline input; JobInputError (prefixed with ``label``) if base64 is bad.

    ``from None``: RunPod puts the whole traceback, chained exceptions included, in the job's
    error blob; the message already says what was wrong.
    """
    try:
        return media.decode()
    except ValueError as exc:
        raise JobInputError(f"{label}: {exc}") from None


def inline_bytes(media: MediaInput, label: str) -> bytes:
    """:func:`decode_media` for an engine: a URL input is a JobInputError (the handler fetches)."""
    if media.base64 is None:
        raise JobInputError(
            f"{label}: the engine takes inline images; URL inputs are fetched by the handler"
        )
    return decode_media(media, label)


# -- torch -----------------------------------------------------------------------------------------


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a :data:`DTYPE_NAMES` key (``bf16`` -> ``torch.bfloat16``)."""
    import torch

    dtype: torch.dtype = getattr(torch, DTYPE_NAMES[name])
    return dtype


def release_failed_call(exc: BaseException, cuda: bool) -> None:
    """Free what a failed (or cancelled) pipeline call still holds, then the memory itself.

    Call it in the ``except`` around the pipeline call, then re-raise. The traceback's frames
    hold the job's tensors (latents, activations), and clearing their locals is not enough:
    ``torch.nn.Module`` calls run through closures that capture their arguments, and a cleared
    frame still references its function, closure and all. So the traceback itself goes (the
    re-raised error's traceback then starts at the engine); its text stays, as a note on the
    exception, for the job's error report. Then garbage is collected and the CUDA cache emptied:
    a worker that goes on after a CUDA OOM starts its next job from a clean allocator.
    """
    import traceback

    tb = exc.__traceback__
    if tb is not None and not isinstance(exc, PipelineCancelled):
        where = "".join(traceback.format_tb(tb)).rstrip()
        exc.add_note(f"inside the pipeline (most recent call last):\n{where}")
    traceback.clear_frames(tb)
    exc.__traceback__ = None
    del tb
    release_memory(cuda)


def release_memory(cuda: bool) -> None:
    """Collect garbage, then (``cuda``) give the CUDA allocator's cached blocks back.

    In that order: tensors only reach the cache once the objects holding them are collected.
    """
    gc.collect()
    if cuda:
        import torch

        torch.cuda.empty_cache()


# -- devices ---------------------------------------------------------------------------------------

_DEVICE = re.compile(r"cpu|cuda(?::\d+)?")


def parse_device(raw: object, what: str, *, tiny: bool) -> str:
    """The device ``raw`` names, checked for form only (no torch import).

    None or blank is the engine's default: ``cpu`` for the tiny engine (its pixels are the CPU's,
    which the tests pin), ``cuda`` for the real models. Never a silent CPU fallback: a real model
    on a CPU takes hours per job, so the CPU must be asked for by name. ``what`` names the
    setting in the error (``VIDEOKIT_DEVICE``, ``device``).
    """
    if raw is None or not str(raw).strip():
        return "cpu" if tiny else "cuda"
    text = str(raw).strip().lower()
    if not _DEVICE.fullmatch(text):
        raise ConfigError(
            f"{what}: {str(raw)!r} is not a device the engines run on",
            hint="use cuda (the default), cuda:N for another GPU of the machine, or cpu",
        )
    return text


def require_device(device: str, what: str) -> None:
    """ConfigError unless ``device`` exists in this process (a CUDA device torch can see).

    Called when an engine loads, before any weight is read: a worker without a usable GPU
    fails at start with this message instead of serving jobs on the CPU.
    """
    if not device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            f"{what} is {device}, but torch sees no CUDA device in this process "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'})",
            hint="run the diffusers engine on a GPU worker (a host driver too old for the "
            "image's CUDA also shows up as no device); VIDEOKIT_DEVICE=cpu runs it on the CPU "
            "anyway (far too slow for the real models), and VIDEOKIT_ENGINE=tiny exercises the "
            "whole code path on a CPU",
        )
    index = torch.device(device).index
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        raise ConfigError(
            f"{what} is {device}, but this machine has {count} CUDA device(s)",
            hint=f"use cuda:0 .. cuda:{count - 1}, or plain cuda",
        )


# -- library output --------------------------------------------------------------------------------


def quiet_progress_bars() -> None:
    """Turn off the tqdm bars diffusers, transformers and huggingface_hub draw on stderr.

    A worker's stderr is its log: one JSON record per line. Loading bars ("Loading pipeline
    components", "Loading weights") would interleave carriage-return noise with those records.
    Process-wide, and meant to be: an engine process is a worker.
    """
    import importlib

    # Each library's own switch (untyped, hence Any).
    for module, switch in (
        ("diffusers.utils.logging", "disable_progress_bar"),
        ("transformers.utils.logging", "disable_progress_bar"),
        ("huggingface_hub.utils", "disable_progress_bars"),
    ):
        library: Any = importlib.import_module(module)
        getattr(library, switch)()
