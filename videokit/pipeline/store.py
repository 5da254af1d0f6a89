"""One result store per user: where it is, who may make a result, and what may be pruned.

Every story, work dir and current directory shares the store (``VIDEOKIT_CACHE_DIR`` or
``cache_dir`` moves it; default the user cache dir), so a renamed story, another ``--out`` or a
second checkout pays nothing for unchanged scenes. A process that is about to pay for a result
first takes the key's lock (``flock``: the kernel drops it when the process dies); another
process that needs the same result waits, then finds it published. A job in flight is recorded
under its key, so a render that takes over after a killed one re-attaches to the remote job. Work
dirs register the keys they use, so ``prune`` keeps what a work dir still needs unless asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from videokit.pipeline.cache import CacheEntry, CacheStore

__all__ = [
    "InFlight",
    "PruneReport",
    "StoreUse",
    "claim",
    "clear_in_flight",
    "describe",
    "entry_size",
    "entry_time",
    "in_flight",
    "prune",
    "record_in_flight",
    "register_workdir",
    "store_root",
    "uses",
]

_LOCKS = ".locks"
_IN_FLIGHT = ".in-flight"
_WORKDIRS = ".workdirs"
# Last use, in days: the buckets `videokit cache` counts entries in.
_AGE_BUCKETS = (
    ("under 1 day", 1.0),
    ("1-7 days", 7.0),
    ("7-30 days", 30.0),
    ("over 30 days", float("inf")),
)


def store_root(cache_dir: Path | None, environ: Mapping[str, str]) -> Path:
    """The store of this user: ``<cache_dir>/store`` (default: the user cache dir)."""
    from videokit.rest.catalog import user_cache_dir

    return (cache_dir or user_cache_dir(environ)) / "store"


def _name(stage: str, key: str) -> str:
    return f"{stage}-{key}"


@contextlib.asynccontextmanager
async def claim(
    store: CacheStore,
    stage: str,
    key: str,
    *,
    on_wait: Callable[[], None] | None = None,
    poll_s: float = 0.2,
) -> AsyncIterator[None]:
    """Hold the right to make ``stage``/``key`` (one process at a time). ``on_wait`` is called
    once if another process holds it; polled, so cancelling the wait is immediate."""
    folder = store.root / _LOCKS
    folder.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = (folder / f"{_name(stage, key)}.lock").open("a")
    try:
        told = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told and on_wait is not None:
                    on_wait()
                told = True
                await asyncio.sleep(poll_s)
        yield
    finally:
        handle.close()  # releases the lock


@dataclass(frozen=True)
class InFlight:
    """A remote job that is making a store entry: re-attach to it instead of paying again."""

    job_id: str
    endpoint: str | None
    since: float


def _in_flight_path(store: CacheStore, stage: str, key: str) -> Path:
    return store.root / _IN_FLIGHT / f"{_name(stage, key)}.json"


def record_in_flight(
    store: CacheStore, stage: str, key: str, job_id: str, endpoint: str | None
) -> None:
    path = _in_flight_path(store, stage, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"job_id": job_id, "endpoint": endpoint, "since": time.time()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(body))
    os.replace(tmp, path)


def in_flight(store: CacheStore, stage: str, key: str) -> InFlight | None:
    try:
        body = json.loads(_in_flight_path(store, stage, key).read_text())
        return InFlight(str(body["job_id"]), body.get("endpoint"), float(body["since"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def clear_in_flight(store: CacheStore, stage: str, key: str) -> None:
    _in_flight_path(store, stage, key).unlink(missing_ok=True)


# -- who uses what ---------------------------------------------------------------------------------


@dataclass
class StoreUse:
    """A work dir that uses the store: the keys its latest render needed."""

    workdir: Path
    story: str | None
    keys: set[str]
    updated: float

    @property
    def alive(self) -> bool:
        return (self.workdir / "manifest.json").is_file()


def register_workdir(
    store: CacheStore, workdir: Path, story: str | None, keys: Collection[str]
) -> None:
    """Record that ``workdir`` needs ``keys`` (``stage/key`` each), replacing its older record."""
    absolute = os.path.abspath(workdir)
    folder = store.root / _WORKDIRS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(absolute.encode()).hexdigest()[:24]}.json"
    body = {"workdir": absolute, "story": story, "keys": sorted(keys), "updated": time.time()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(body, indent=1))
    os.replace(tmp, path)


def uses(store: CacheStore) -> list[StoreUse]:
    found: list[StoreUse] = []
    for path in sorted((store.root / _WORKDIRS).glob("*.json")):
        try:
            body = json.loads(path.read_text())
            found.append(
                StoreUse(
                    Path(body["workdir"]),
                    body.get("story"),
                    set(body.get("keys", [])),
                    float(body.get("updated", 0.0)),
                )
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def entry_size(entry: CacheEntry) -> int:
    return sum(p.stat().st_size for p in entry.folder.iterdir() if p.is_file())


def entry_time(entry: CacheEntry) -> float:
    """When the entry was last used: its meta file's time (touched on every hit)."""
    try:
        return (entry.folder / "meta.json").stat().st_mtime
    except OSError:
        return 0.0


@dataclass
class PruneReport:
    removed: int = 0
    freed_bytes: int = 0
    kept_in_use: int = 0
    remaining: int = 0
    remaining_bytes: int = 0
    leftovers: int = 0  # half-written folders of killed processes, removed
    by_workdir: dict[str, int] = field(default_factory=dict)


def prune(
    store: CacheStore,
    *,
    older_than_s: float | None = None,
    max_bytes: int | None = None,
    keep_used: bool = True,
    now: float | None = None,
) -> PruneReport:
    """Delete entries not used for ``older_than_s``, then the least recently used until the
    store holds at most ``max_bytes``; entries a living work dir needs are kept unless
    ``keep_used`` is False. Half-written folders that killed processes left are removed too."""
    now = time.time() if now is None else now
    report = PruneReport()
    report.leftovers = _sweep(store.root)
    needed: set[str] = set()
    if keep_used:
        for use in uses(store):
            if use.alive:
                needed |= use.keys
    entries = sorted(store.entries(), key=entry_time)
    sizes = {e.folder: entry_size(e) for e in entries}
    total = sum(sizes.values())
    for entry in entries:
        name = f"{entry.meta.get('stage', entry.folder.parent.parent.name)}/{entry.key}"
        too_old = older_than_s is not None and now - entry_time(entry) > older_than_s
        too_big = max_bytes is not None and total > max_bytes
        if not (too_old or too_big):
            continue
        if name in needed:
            report.kept_in_use += 1
            continue
        store.remove(entry)
        report.removed += 1
        report.freed_bytes += sizes[entry.folder]
        total -= sizes[entry.folder]
    remaining = list(store.entries())
    report.remaining = len(remaining)
    report.remaining_bytes = sum(entry_size(e) for e in remaining)
    return report


def _sweep(root: Path) -> int:
    """Remove ``.tmp-*`` / ``.gone-*`` folders older than a minute (a live writer is faster)."""
    removed = 0
    cutoff = time.time() - 60
    for pattern in ("*/??/.tmp-*", "*/??/.gone-*"):
        for folder in root.glob(pattern):
            with contextlib.suppress(OSError):
                if folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed += 1
    return removed


def describe(store: CacheStore, *, now: float | None = None) -> dict[str, Any]:
    """Size and entries of the store, by story (the work dirs that use them) and by age."""
    now = time.time() if now is None else now
    entries = list(store.entries())
    owners: dict[str, list[str]] = {}
    for use in uses(store):
        for key in use.keys:
            owners.setdefault(key, []).append(use.story or str(use.workdir))
    by_story: dict[str, dict[str, int]] = {}
    ages = dict.fromkeys((name for name, _ in _AGE_BUCKETS), 0)
    for entry in entries:
        size = entry_size(entry)
        name = f"{entry.meta.get('stage')}/{entry.key}"
        for story in owners.get(name, ["(no work dir)"]):
            row = by_story.setdefault(story, {"entries": 0, "bytes": 0})
            row["entries"] += 1
            row["bytes"] += size
        days = (now - entry_time(entry)) / 86400
        ages[next(name for name, below in _AGE_BUCKETS if days < below)] += 1
    return {
        "root": str(store.root),
        "entries": len(entries),
        "bytes": sum(entry_size(e) for e in entries),
        "by_story": by_story,
        "by_age": ages,
        "workdirs": [
            {"workdir": str(u.workdir), "story": u.story, "entries": len(u.keys), "alive": u.alive}
            for u in uses(store)
        ],
    }
