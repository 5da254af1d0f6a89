"""Content-addressed results: a stage's output is stored under the hash of everything that made it.

The key covers the backend's model identity, every request parameter, the seed and the *bytes* of
the input images, so an unchanged scene is never paid for twice, an edited scene misses, and every
scene downstream of it misses too (its input frame changed). Entries are written to a temporary
folder and renamed into place, so a render killed at any moment leaves either a whole entry or none.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from videokit.protocol import MediaInput

__all__ = ["CacheEntry", "CacheStore", "cache_key", "file_sha256", "lookup"]


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
    for identity in identities:
        entry = store.get(stage, cache_key(identity, request))
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
    """A folder of entries: ``<root>/<stage>/<key[:2]>/<key>/{meta.json, files...}``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _folder(self, stage: str, key: str) -> Path:
        return self.root / stage / key[:2] / key

    def get(self, stage: str, key: str) -> CacheEntry | None:
        folder = self._folder(stage, key)
        try:
            meta = json.loads((folder / "meta.json").read_text())
        except (OSError, ValueError):
            return None
        for name, digest in meta.get("files", {}).items():
            path = folder / name
            if not path.is_file() or file_sha256(path) != digest:
                return None  # damaged entry: treat as a miss and let it be rewritten
        return CacheEntry(key, folder, meta)

    def put(
        self,
        stage: str,
        key: str,
        files: Mapping[str, bytes],
        meta: Mapping[str, Any],
    ) -> CacheEntry:
        final = self._folder(stage, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = final.parent / f".tmp-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            digests: dict[str, str] = {}
            for name, data in files.items():
                _write(staging / name, data)
                digests[name] = hashlib.sha256(data).hexdigest()
            record = {**meta, "key": key, "stage": stage, "files": digests}
            _write(staging / "meta.json", json.dumps(record, indent=2).encode())
            if final.exists():
                shutil.rmtree(final)  # only reached for damaged entries (get() said miss)
            os.rename(staging, final)
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
