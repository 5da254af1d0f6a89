"""What a render leaves behind besides its film: what it paid for, and what it needs kept.

The attempts a run paid for (its own jobs, failed ones and warm-ups included; results it reused
from the store cost nothing) feed both the bill after a render and ``videokit cost``; the keys of
a work dir's finished stages tell the store what ``prune`` must keep.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path

from videokit.billed_time import RenderBilling, render_billing
from videokit.cold_starts import record_cold_starts
from videokit.costs import CostModel
from videokit.pipeline.cache import CacheStore
from videokit.pipeline.manifest import AttemptRecord, Manifest
from videokit.pipeline.store import register_workdir

__all__ = ["bill", "record_starts", "register", "run_attempts"]

_STAGES = ("edit", "animate")


def run_attempts(manifest: Manifest) -> dict[str, list[AttemptRecord]]:
    """Per stage, the attempts the latest run paid for: stages it made, and stages that did not
    finish (failed, cancelled, still submitted: only the latest run leaves those), not those
    taken from the store. Warm-up jobs count for the animate endpoint."""
    run_id = manifest.run.id if manifest.run is not None else None
    spent: dict[str, list[AttemptRecord]] = {"edit": [], "animate": list(manifest.warmup)}
    for scene in manifest.scenes.values():
        for stage in _STAGES:
            record = getattr(scene, stage)
            if record is None or record.cached:
                continue
            if record.run_id == run_id or record.status != "done":
                spent[stage].extend(record.attempts)
    return spent


def bill(manifest: Manifest, costs: CostModel, concurrency: Mapping[str, int]) -> RenderBilling:
    """What RunPod bills for the latest run: its jobs, plus the estimated start and idle time of
    the workers they woke (see :func:`videokit.billed_time.render_billing`)."""
    return render_billing(run_attempts(manifest), costs, concurrency=concurrency)


def register(store: CacheStore, workdir: Path, title: str | None, manifest: Manifest) -> None:
    """Tell the store which results ``workdir`` needs (``prune`` keeps them)."""
    keys = {
        f"{stage}/{record.key}"
        for scene in manifest.scenes.values()
        for stage in _STAGES
        if (record := getattr(scene, stage)) is not None and record.status == "done"
    }
    with contextlib.suppress(OSError):  # bookkeeping: never fail a render over it
        register_workdir(store, workdir, title, keys)


def record_starts(manifest: Manifest, cache_dir: Path) -> None:
    """Keep the cold starts the latest run's jobs waited for, per endpoint (see
    :mod:`videokit.cold_starts`): estimates then use them instead of a guess."""
    delays: dict[str, list[float]] = {}
    for attempts in run_attempts(manifest).values():
        for attempt in attempts:
            if attempt.endpoint and attempt.delay_ms is not None:
                delays.setdefault(attempt.endpoint, []).append(attempt.delay_ms / 1000)
    with contextlib.suppress(OSError):
        record_cold_starts(cache_dir, delays)
