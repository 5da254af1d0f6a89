"""Cold starts measured on your endpoints, so estimates use them instead of a guess.

After a render, every job that waited at least ``COLD_DELAY_S`` for a worker (its ``delayTime``)
is a cold start of its endpoint; the last ``KEEP`` per endpoint are kept in the user cache dir
(``cold-starts.json``). ``plan`` then prices a stage's start time at the median of its first
endpoint's measurements, unless you configured one. ``delayTime`` includes queue wait, so a
measurement is an upper bound of the start itself.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["COLD_DELAY_S", "KEEP", "cold_starts_file", "measured_start", "record_cold_starts"]

#: A job's delayTime at least this long means it waited for a worker to start: a warm worker
#: picks a job up within a second or two, and RunPod's scaler adds one after ~4 s of queueing.
COLD_DELAY_S = 10.0
KEEP = 20


def cold_starts_file(cache_dir: Path) -> Path:
    return cache_dir / "cold-starts.json"


def _read(path: Path) -> dict[str, list[float]]:
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(body, dict):
        return {}
    return {
        str(endpoint): [float(s) for s in seconds if isinstance(s, int | float)]
        for endpoint, seconds in body.get("endpoints", {}).items()
        if isinstance(seconds, list)
    }


def record_cold_starts(cache_dir: Path, delays: Mapping[str, Iterable[float]]) -> None:
    """Add each endpoint's job delays (seconds) that were cold starts; shorter ones are ignored."""
    found = {e: [d for d in ds if d >= COLD_DELAY_S] for e, ds in delays.items()}
    found = {e: ds for e, ds in found.items() if ds}
    if not found:
        return
    path = cold_starts_file(cache_dir)
    known = _read(path)
    for endpoint, seconds in found.items():
        known[endpoint] = [*known.get(endpoint, []), *seconds][-KEEP:]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"updated": time.time(), "endpoints": known}, indent=1))
    os.replace(tmp, path)


def measured_start(cache_dir: Path, endpoint: str) -> tuple[float, int] | None:
    """(median start seconds, how many cold starts) measured on ``endpoint``, if any."""
    seconds = _read(cold_starts_file(cache_dir)).get(endpoint)
    if not seconds:
        return None
    return statistics.median(seconds), len(seconds)
