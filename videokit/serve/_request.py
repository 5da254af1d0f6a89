"""Reading and validating RunPod API requests for ``videokit serve``.

A request that breaks RunPod's rules (payload limits, a malformed body, policy or query
parameter) raises :class:`ApiError`, which the app answers as ``{"error": message}`` with the
status RunPod would use.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import Request

from videokit.serve._job import (
    DEFAULT_EXECUTION_TIMEOUT_MS,
    DEFAULT_TTL_MS,
    MAX_TTL_MS,
    Job,
    JobPolicy,
    Submission,
)
from videokit.serve.jobs import JobQueue

__all__ = [
    "NOT_FOUND",
    "RUNSYNC_BODY_LIMIT",
    "RUNSYNC_DEFAULT_WAIT_MS",
    "RUNSYNC_MAX_WAIT_MS",
    "RUNSYNC_MIN_WAIT_MS",
    "RUN_BODY_LIMIT",
    "ApiError",
    "existing",
    "parse_status_ttl",
    "parse_wait",
    "read_json",
    "submit",
]

# RunPod's payload limits: /run 10 MB, /runsync 20 MB.
RUN_BODY_LIMIT = 10 * 1024 * 1024
RUNSYNC_BODY_LIMIT = 20 * 1024 * 1024
# An oversized body is still read (and discarded) up to this multiple of the limit, so that the
# client, which is still sending, gets the 400 instead of a broken pipe. Beyond it we stop
# reading and let the connection close.
_DRAIN_FACTOR = 8

RUNSYNC_DEFAULT_WAIT_MS = 90_000
RUNSYNC_MIN_WAIT_MS = 1_000
RUNSYNC_MAX_WAIT_MS = 300_000

NOT_FOUND = "request does not exist"


class ApiError(Exception):
    """Answered as ``{"error": message}`` with ``status``, RunPod's error shape."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def existing(job: Job | None) -> Job:
    """The job, or a 404 for an unknown (or expired) id."""
    if job is None:
        raise ApiError(404, NOT_FOUND)
    return job


async def read_json(request: Request, limit: int, route: str) -> dict[str, Any]:
    """The request body as a JSON object, enforcing RunPod's payload limit for ``route``."""
    size = 0
    parts: list[bytes] = []
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            parts.append(chunk)
        elif size > limit * _DRAIN_FACTOR:
            break
    if size > limit:
        raise ApiError(
            400,
            f"request body is {size / 2**20:.1f} MiB; {route} accepts at most "
            f"{limit / 2**20:g} MiB (upload large inputs to object storage and pass a URL)",
        )
    raw = b"".join(parts)
    if not raw.strip():
        raise ApiError(400, 'request body is empty; expected {"input": {...}}')
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ApiError(400, f"request body is not valid JSON: {err}") from None
    if not isinstance(body, dict):
        raise ApiError(400, 'request body must be a JSON object like {"input": {...}}')
    return body


def submit(queue: JobQueue, body: dict[str, Any], via: Submission) -> Job:
    """Validate a run/runsync body (400 when malformed) and queue the job."""
    if body.get("input") is None:
        raise ApiError(400, 'missing "input": the body must look like {"input": {...}}')
    policy = body.get("policy") or {}
    if not isinstance(policy, dict):
        raise ApiError(400, '"policy" must be an object')
    low_priority = policy.get("lowPriority", False)
    if not isinstance(low_priority, bool):
        raise ApiError(400, '"policy.lowPriority" must be true or false')
    webhook = body.get("webhook")
    if webhook is not None and (
        not isinstance(webhook, str) or not webhook.startswith(("http://", "https://"))
    ):
        raise ApiError(400, '"webhook" must be an http(s) URL')
    extra = {"s3Config": body["s3Config"]} if body.get("s3Config") is not None else {}
    job_policy = JobPolicy(
        execution_timeout_ms=_positive_ms(policy, "executionTimeout", DEFAULT_EXECUTION_TIMEOUT_MS),
        ttl_ms=_positive_ms(policy, "ttl", DEFAULT_TTL_MS),
        low_priority=low_priority,
    )
    return queue.submit(body["input"], job_policy, webhook=webhook, extra=extra, via=via)


def _positive_ms(policy: dict[str, Any], key: str, default: int) -> int:
    value = policy.get(key)
    if value is None:
        return default
    # bool is an int subclass; true is not a timeout.
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ApiError(400, f'"policy.{key}" must be a positive number of milliseconds')
    return int(value)


def parse_wait(raw: str | None) -> int:
    """``runsync?wait=`` in milliseconds: RunPod's default when absent, clamped to its range."""
    if raw is None:
        return RUNSYNC_DEFAULT_WAIT_MS
    try:
        wait = int(raw)
    except ValueError:
        raise ApiError(400, f"wait={raw!r} is not a number of milliseconds") from None
    # RunPod clamps rather than rejects.
    return min(max(wait, RUNSYNC_MIN_WAIT_MS), RUNSYNC_MAX_WAIT_MS)


def parse_status_ttl(raw: str | None) -> int | None:
    """``status/{id}?ttl=`` in milliseconds (None when absent): a whole number from 1 ms up to
    RunPod's longest ttl, 7 days; anything else is a 400."""
    if raw is None:
        return None
    ttl = int(raw) if re.fullmatch(r"[0-9]{1,16}", raw) else 0
    if not 1 <= ttl <= MAX_TTL_MS:
        raise ApiError(
            400,
            f"ttl={raw!r} is not a time to live: give whole milliseconds from 1 to {MAX_TTL_MS} "
            "(7 days)",
        )
    return ttl
