"""RunPod's job status, typed, and the small readers every part of the client shares."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

__all__ = [
    "ALIVE_STATES",
    "FINAL_STATES",
    "JobStatus",
    "RemoteState",
    "describe",
    "error_text",
    "int_or_none",
    "is_progress",
    "is_transient_job_error",
    "json_body",
    "maybe_sent",
    "status_of",
]

RemoteState = Literal[
    "IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT", "UNKNOWN"
]
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
ALIVE_STATES = frozenset({"IN_QUEUE", "IN_PROGRESS", "RUNNING"})
_TRANSIENT_MARKERS = (
    "cuda out of memory",
    "outofmemoryerror",
    "worker lost",
    "worker exited",
    "worker died",
    "worker was terminated",
    "pod terminated",
    "connection reset",
    "no space left on device",
    "temporarily unavailable",
)


@dataclass(frozen=True)
class JobStatus:
    """One read of a job's status (``GET status/{id}``), as RunPod reports it.

    ``state`` is RunPod's status word (``RUNNING``, which some workers report, reads as
    ``IN_PROGRESS``); ``delay_ms`` is queue plus cold start, ``execution_ms`` the handler's run.
    """

    id: str
    state: RemoteState
    delay_ms: int | None = None
    execution_ms: int | None = None
    output: Any = None
    error: str | None = None
    worker_id: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def done(self) -> bool:
        return self.state in FINAL_STATES

    @classmethod
    def parse(cls, body: Mapping[str, Any], job_id: str) -> JobStatus:
        word = str(body.get("status") or "UNKNOWN").upper()
        if word == "RUNNING":
            word = "IN_PROGRESS"
        known = FINAL_STATES | {"IN_QUEUE", "IN_PROGRESS"}
        state: RemoteState = word if word in known else "UNKNOWN"  # type: ignore[assignment]
        worker = body.get("workerId")
        return cls(
            id=str(body.get("id") or job_id),
            state=state,
            delay_ms=int_or_none(body.get("delayTime")),
            execution_ms=int_or_none(body.get("executionTime")),
            output=body.get("output"),
            error=error_text(body.get("error")) or None,
            worker_id=worker if isinstance(worker, str) else None,
            raw=dict(body),
        )


def is_transient_job_error(error: str | None) -> bool:
    """Whether a FAILED job's error is worth resubmitting (another worker may succeed)."""
    text = (error or "").lower()
    return any(marker in text for marker in _TRANSIENT_MARKERS)


def maybe_sent(exc: BaseException) -> bool:
    """Whether a failed request may have reached the server (its reply was what got lost).

    A 502 or 504 from a gateway may come after the request was passed on: the job may exist.
    """
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in (502, 504)
    return isinstance(exc, httpx.TransportError) and not isinstance(
        exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout
    )


def is_progress(chunk: Any) -> bool:
    return (
        isinstance(chunk, dict)
        and isinstance(chunk.get("progress"), int | float)
        and not isinstance(chunk.get("progress"), bool)
        and set(chunk) <= {"progress", "message"}
    )


def json_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def error_text(error: Any) -> str:
    """RunPod reports errors as text, or as a JSON blob {error_type, error_message, ...}."""
    if error is None:
        return ""
    if isinstance(error, str):
        text = error
        try:
            error = json.loads(text)
        except ValueError:
            return text
    if isinstance(error, dict):
        message = error.get("error_message") or error.get("message") or error.get("error")
        kind = error.get("error_type")
        text = str(message) if message is not None else json.dumps(error)[:500]
        return f"{kind}: {text}" if kind and str(kind) not in text else text
    return str(error)


def describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    message = getattr(exc, "message", None)
    if isinstance(message, str):
        return message
    return type(exc).__name__ + (f": {exc}" if str(exc) else "")


def status_of(exc: BaseException) -> int | None:
    return exc.response.status_code if isinstance(exc, httpx.HTTPStatusError) else None


def int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
