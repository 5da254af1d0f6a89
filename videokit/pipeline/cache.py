"""Content-addressed results: a stage's output is stored under the hash of everything that made it.

The key covers the backend's model identity, every request parameter, the seed and the *bytes* of
the input images, so an unchanged scene is never paid for twice, an edited scene misses, and every
scene downstream of it misses too (its input frame changed). One store serves every story and work
dir of a user (see :mod:`videokit.pipeline.store`). Entries are written to a temporary folder and
renamed into place, so a render killed at any moment leaves either a whole entry or none, and two
processes publishing the same result keep one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from videokit.protocol import MediaInput

__all__ = ["CacheEntry", "CacheStore", "cache_key", "file_sha256", "lookup", "lookup_keys"]


def cache_key(identity: str, request: BaseModel) -> str:
    """SHA-256 over the model identity and the request, with media replaced by content hashes."""
    dump = request.model_dump(mode="python")
    if "audio" in dump and dump["audio"] is None:
        # A field added later (sound-to-video): left out when unused, so every key made before it
        # existed stays valid.
        del dump["audio"]
    payload = {"identity": identity, "request": _canonical(dump)}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def lookup(
    store: CacheStore, stage: str, identities: Sequence[str], request: BaseModel
) -> CacheEntry | None:
    """The cached result of ``request`` made by any of ``identities`` (in order), if any."""
    return lookup_keys(store, stage, [cache_key(identity, request) for identity in identities])


def lookup_keys(store: CacheStore, stage: str, keys: Sequence[str]) -> CacheEntry | None:
    """The first of ``keys`` the store holds an entry for."""
    for key in keys:
        entry = store.get(stage, key)
        if entry is not None:
            return entry
    return None


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"base64", "url"}:
            return MediaInput.model_validate(value).fingerprint()
        # Where outputs are uploaded does not change what they are.
        return {k: _canonical(v) for k, v in value.items() if k != "outputs"}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


@dataclass(frozen=True)
class CacheEntry:
    key: str
    folder: Path
    meta: dict[str, Any]

    def file(self, name: str) -> Path:
        return self.folder / name


class CacheStore:
    """A folder of entries: ``<root>/<stage>/<key[:2]>/<key>/{meta.json, files...}``.

    ``legacy``: a work dir's own ``cache/`` from before the store was shared; an entry found
    only there is adopted into ``root`` (hard links where possible) the first time it is read.
    """

    def __init__(self, root: Path, *, legacy: Path | None = None) -> None:
        self.root = Path(root)
        self.legacy = Path(legacy) if legacy is not None else None

    def _folder(self, stage: str, key: str, root: Path | None = None) -> Path:
        return (root or self.root) / stage / key[:2] / key

    def get(self, stage: str, key: str) -> CacheEntry | None:
        entry = _read(self._folder(stage, key), key)
        if entry is not None:
            # Its last use, for pruning the least recently used first.
            with contextlib.suppress(OSError):
                os.utime(entry.folder / "meta.json")
            return entry
        if self.legacy is None:
            return None
        old = _read(self._folder(stage, key, self.legacy), key)
        if old is None:
            return None
        sources = {name: old.file(name) for name in old.meta.get("files", {})}
        return self.adopt(stage, key, sources, old.meta)

    def entries(self, stage: str | None = None) -> Iterator[CacheEntry]:
        """Every whole entry of the store (damaged and half-written ones are skipped)."""
        for stage_dir in sorted(self.root.glob("*/")) if stage is None else [self.root / stage]:
            if stage_dir.name.startswith(".") or not stage_dir.is_dir():
                continue
            for folder in sorted(stage_dir.glob("??/*")):
                if folder.name.startswith("."):
                    continue
                entry = _read(folder, folder.name, verify=False)
                if entry is not None:
                    yield entry

    def put(
        self,
        stage: str,
        key: str,
        files: Mapping[str, bytes],
        meta: Mapping[str, Any],
    ) -> CacheEntry:
        return self._publish(stage, key, meta, lambda staging: _write_all(staging, files))

    def adopt(
        self, stage: str, key: str, sources: Mapping[str, Path], meta: Mapping[str, Any]
    ) -> CacheEntry | None:
        """Publish an entry from files that exist elsewhere (a work dir's scene files, an old
        per-work-dir cache): hard links where possible, else copies. None if one is missing."""
        if not all(path.is_file() for path in sources.values()):
            return None

        def place(staging: Path) -> dict[str, str]:
            digests: dict[str, str] = {}
            for name, path in sources.items():
                try:
                    os.link(path, staging / name)
                except OSError:
                    shutil.copyfile(path, staging / name)  # another filesystem
                digests[name] = file_sha256(staging / name)
            return digests

        return self._publish(stage, key, meta, place)

    def _publish(
        self,
        stage: str,
        key: str,
        meta: Mapping[str, Any],
        place: Callable[[Path], dict[str, str]],
    ) -> CacheEntry:
        final = self._folder(stage, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = final.parent / f".tmp-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            digests = place(staging)
            record = {**meta, "key": key, "stage": stage, "files": digests}
            _write(staging / "meta.json", json.dumps(record, indent=2).encode())
            try:
                os.rename(staging, final)
            except OSError:
                if _read(final, key) is None:
                    # Damaged (get() said miss): move it aside whole, then take its place.
                    _discard(final)
                    with contextlib.suppress(OSError):  # unless another process just did
                        os.rename(staging, final)
                # else another process published the same result first: keep theirs.
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        entry = self.get(stage, key)
        assert entry is not None
        return entry

    def add_file(self, entry: CacheEntry, name: str, data: bytes) -> None:
        """Attach a derived file (e.g. a decoded first frame) to an existing entry."""
        _write(entry.folder / f".{name}.tmp", data)
        os.replace(entry.folder / f".{name}.tmp", entry.folder / name)

    def remove(self, entry: CacheEntry) -> None:
        """Delete an entry: renamed out of the way first, so a reader never sees half of one."""
        _discard(entry.folder)


def _read(folder: Path, key: str, *, verify: bool = True) -> CacheEntry | None:
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    for name, digest in meta.get("files", {}).items():
        path = folder / name
        if not path.is_file() or (verify and file_sha256(path) != digest):
            return None  # damaged entry: treat as a miss and let it be rewritten
    return CacheEntry(key, folder, meta)


def _write_all(staging: Path, files: Mapping[str, bytes]) -> dict[str, str]:
    digests: dict[str, str] = {}
    for name, data in files.items():
        _write(staging / name, data)
        digests[name] = hashlib.sha256(data).hexdigest()
    return digests


def _discard(folder: Path) -> None:
    trash = folder.parent / f".gone-{uuid.uuid4().hex}"
    try:
        os.rename(folder, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _write(path: Path, data: bytes) -> None:
    # No fsync: entries are renamed into place whole, so a killed process leaves none or all of
    # one, and after a power loss a damaged entry fails its SHA-256 check in get() and is a miss.
    path.write_bytes(data)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
