"""Small pieces the worker's engines (:mod:`~videokit.worker.qwen`, :mod:`~videokit.worker.wan`)
and its job handler (:mod:`~videokit.worker.handler`) share.

Only what behaves *identically* in every user lives here: the JSON log-line format, the stderr log
sink, engine-option checks, the exception that unwinds a cancelled pipeline, thread-safe progress
reports, inline-image decoding, dtype names, and memory release. What merely looks alike stays
with its engine (the phase timers measure different phases; device resolution, option defaults
and error messages differ per engine on purpose).

Importing this module never imports torch: the edit engine checks its model files, and the
handler serves the preview engine, without it. Functions that need torch import it when called.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

from videokit.errors import ConfigError
from videokit.protocol import MediaInput
from videokit.worker.compat import JobInputError

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
    "raise_if_cancelled",
    "reject_unknown_options",
    "release_memory",
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


def release_memory(cuda: bool) -> None:
    """Collect garbage, then (``cuda``) give the CUDA allocator's cached blocks back.

    In that order: tensors only reach the cache once the objects holding them are collected.
    """
    gc.collect()
    if cuda:
        import torch

        torch.cuda.empty_cache()
