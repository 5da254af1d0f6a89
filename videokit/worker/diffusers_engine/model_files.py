"""Where an engine's weights are: the search for a complete model directory, and Hub downloads.

Both engines lay their weights out under a *model directory* and search a list of them in order
(the first complete one wins, so a baked image and a network volume can hold different models).
With ``VIDEOKIT_ALLOW_HUB=1`` what is missing is downloaded into the first one, never into the
Hugging Face cache, and still loaded from local files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from videokit.errors import ConfigError
from videokit.worker.common import env_text
from videokit.worker.model_cache import hf_cache_roots, hf_cache_snapshot

__all__ = [
    "SNAPSHOT_PATTERNS",
    "CachedSnapshot",
    "DirSearch",
    "HubClient",
    "HubFile",
    "HubSnapshot",
    "cached_snapshot",
    "download_missing",
    "find_complete_dir",
    "hub_client",
    "hub_token",
    "model_search_path",
]


# -- model directories -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DirSearch:
    """Where an engine looked for its weights, in order, and the first complete place.

    ``looked`` holds, for every directory tried before (and including) ``found``, the paths
    missing there (relative to it), or None for a directory that does not exist.
    """

    found: Path | None
    looked: tuple[tuple[Path, tuple[str, ...] | None], ...]

    def report(self) -> str:
        """One block per place looked: does not exist, or every missing path in full."""
        lines: list[str] = []
        for root, missing in self.looked:
            if missing is None:
                lines.append(f"  {root}: does not exist")
            elif missing:
                lines.append(f"  {root}: missing {len(missing)} file(s):")
                # Joined as text: a Path would drop the trailing "/" of a folder entry.
                lines.extend(f"    - {root}/{item}" for item in missing)
        return "\n".join(lines)


def model_search_path(
    *,
    model_dir: object,
    model_dirs: object,
    env: Mapping[str, str],
    defaults: tuple[Path, ...],
) -> tuple[tuple[Path, ...], str]:
    """Where an engine looks for its weights, in order, and how that was chosen (for errors).

    The first of: the ``model_dir`` option (one directory), the ``model_dirs`` option (a
    sequence, searched in order), ``VIDEOKIT_MODEL_DIR`` (one directory),
    ``VIDEOKIT_MODEL_DIRS`` (directories separated by ``os.pathsep``, ``:`` on Linux, searched
    in order), ``defaults``. Both engines resolve it here, so the search reads the same for
    both. Naming both forms at one level is a ConfigError: which should win is a guess.
    """
    if model_dir is not None and model_dirs is not None:
        raise ConfigError(
            "engine options 'model_dir' and 'model_dirs' are both given",
            hint="give model_dir for one directory or model_dirs for a search path, not both",
        )
    if model_dir is not None:
        return (_option_path(model_dir, "model_dir"),), "the model_dir option"
    if model_dirs is not None:
        if isinstance(model_dirs, str | os.PathLike) or not isinstance(model_dirs, Sequence):
            raise ConfigError(
                f"engine option 'model_dirs' must be a list of directories, got {model_dirs!r}",
                hint="pass model_dir for a single directory",
            )
        dirs = tuple(_option_path(item, "model_dirs") for item in model_dirs)
        if not dirs:
            raise ConfigError("engine option 'model_dirs' is empty: name at least one directory")
        return dirs, "the model_dirs option"
    single, search = env_text(env, "VIDEOKIT_MODEL_DIR"), env_text(env, "VIDEOKIT_MODEL_DIRS")
    if single is not None and search is not None:
        raise ConfigError(
            "VIDEOKIT_MODEL_DIR and VIDEOKIT_MODEL_DIRS are both set",
            hint="set VIDEOKIT_MODEL_DIR for one directory, or VIDEOKIT_MODEL_DIRS for a "
            f"search path ({os.pathsep}-separated), and unset the other",
        )
    if single is not None:
        return (Path(single).expanduser(),), "VIDEOKIT_MODEL_DIR"
    if search is not None:
        parts = (part.strip() for part in search.split(os.pathsep))
        dirs = tuple(Path(part).expanduser() for part in parts if part)
        if not dirs:
            raise ConfigError(
                f"VIDEOKIT_MODEL_DIRS={search!r} names no directory",
                hint=f"separate the model directories with {os.pathsep!r}, or unset it",
            )
        return dirs, "VIDEOKIT_MODEL_DIRS"
    return defaults, "the default locations"


def _option_path(value: object, name: str) -> Path:
    if not isinstance(value, str | os.PathLike) or not os.fspath(value).strip():
        raise ConfigError(f"engine option {name!r}: {value!r} is not a directory path")
    return Path(os.fspath(value).strip()).expanduser()


def find_complete_dir(dirs: Sequence[Path], missing: Callable[[Path], Sequence[str]]) -> DirSearch:
    """The first of ``dirs`` where ``missing(dir)`` finds nothing, and what the others lacked.

    First *complete*, not first *existing*: an image with weights baked for one model and a
    network volume holding another must load the one asked for from wherever it is complete.
    """
    looked: list[tuple[Path, tuple[str, ...] | None]] = []
    for root in dirs:
        if not root.is_dir():
            looked.append((root, None))
            continue
        absent = tuple(missing(root))
        looked.append((root, absent))
        if not absent:
            return DirSearch(found=root, looked=tuple(looked))
    return DirSearch(found=None, looked=tuple(looked))


# -- the Hugging Face Hub --------------------------------------------------------------------------

#: What a download of a diffusers snapshot fetches: the index, every component's JSON (configs,
#: tokenizer and processor files), safetensors weights and tokenizer vocabularies; not the
#: .bin/.pth duplicates or sample media some repositories also hold. The same set as
#: ``workers/models.py`` bakes.
SNAPSHOT_PATTERNS: tuple[str, ...] = (
    "model_index.json",
    "*/*.json",
    "*/*.safetensors",
    "*/*.txt",
    "*/*.model",
    "*/*.jinja",
)

_OFFLINE_TRUE = frozenset({"1", "true", "yes", "on"})


class HubClient(Protocol):
    """The two ``huggingface_hub`` functions a runtime download calls (the module itself is one).

    An engine takes one as its ``hub`` option: tests pass a stand-in serving files from a
    folder, and nothing else changes.
    """

    def snapshot_download(self, repo_id: str, **kwargs: Any) -> Any: ...

    def hf_hub_download(self, repo_id: str, filename: str, **kwargs: Any) -> Any: ...


def hub_client(hub: object) -> HubClient | None:
    """The ``hub`` engine option, checked: None (``huggingface_hub``, imported when needed) or
    an object with both download functions."""
    if hub is None:
        return None
    for name in ("snapshot_download", "hf_hub_download"):
        if not callable(getattr(hub, name, None)):
            raise ConfigError(
                f"engine option 'hub' has no {name}() (got {type(hub).__name__})",
                hint="pass the huggingface_hub module, or an object with snapshot_download and "
                "hf_hub_download taking huggingface_hub's arguments",
            )
    return cast(HubClient, hub)


@dataclass(frozen=True)
class HubFile:
    """One file of a Hub repository, stored at ``<model dir>/<local_path>``."""

    repo_id: str
    repo_path: str
    local_path: str
    revision: str | None = None  # the commit it is pinned to (workers/models.py's)


@dataclass(frozen=True)
class HubSnapshot:
    """A diffusers snapshot of a Hub repository, stored at ``<model dir>/<folder>``."""

    repo_id: str
    folder: str
    revision: str | None = None


def hub_token(env: Mapping[str, str]) -> str | bool:
    """The token for a runtime download: ``HF_TOKEN`` from ``env`` if set, else False.

    False, not None: huggingface_hub would otherwise pick up a login cached on disk. The images
    never hold a token; a worker that must download gets one the way it gets any secret, as a
    RunPod secret in its environment.
    """
    return env_text(env, "HF_TOKEN") or False


def download_missing(
    root: Path,
    *,
    snapshot: HubSnapshot | None,
    files: Sequence[HubFile],
    env: Mapping[str, str],
    hub: HubClient | None = None,
) -> None:
    """Download into ``root``: the diffusers ``snapshot`` and ``files``, at their revisions.

    Through ``hub`` (default: the ``huggingface_hub`` module).

    Into the model directory itself (the engines load from there, and a second worker on the
    same volume finds the files), never into the Hugging Face cache. ``snapshot_download``
    skips what is already there; each file goes through a scratch folder inside ``root`` and is
    moved into place complete, so an interrupted download never leaves a half file under its
    final name. Raises ConfigError if downloads are disabled by ``HF_HUB_OFFLINE``.
    """
    if env.get("HF_HUB_OFFLINE", "").strip().lower() in _OFFLINE_TRUE:
        raise ConfigError(
            "VIDEOKIT_ALLOW_HUB=1, but HF_HUB_OFFLINE=1 disables every download",
            hint="unset HF_HUB_OFFLINE (the worker images set it to 1) or set it to 0",
        )
    import importlib

    client = hub or cast(HubClient, importlib.import_module("huggingface_hub"))
    token = hub_token(env)
    root.mkdir(parents=True, exist_ok=True)
    if snapshot is not None:
        client.snapshot_download(
            repo_id=snapshot.repo_id,
            revision=snapshot.revision,
            local_dir=root / snapshot.folder,
            allow_patterns=list(SNAPSHOT_PATTERNS),
            token=token,
        )
    for item in files:
        destination = root / item.local_path
        if destination.is_file():
            continue
        with tempfile.TemporaryDirectory(prefix=".download-", dir=root) as scratch:
            fetched = client.hf_hub_download(
                repo_id=item.repo_id,
                filename=item.repo_path,
                revision=item.revision,
                local_dir=scratch,
                token=token,
            )
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(fetched, destination)


@dataclass(frozen=True)
class CachedSnapshot:
    """A snapshot found in RunPod's cached models, and the model directory holding its LoRAs
    (the snapshot's own folder when none are needed)."""

    base: Path
    lora_root: Path


def cached_snapshot(
    repo_id: str,
    revision: str,
    *,
    env: Mapping[str, str],
    missing: Callable[[Path], Sequence[str]],
    lora_roots: Sequence[Path] | None,
    has_loras: Callable[[Path], bool],
) -> tuple[CachedSnapshot | None, str]:
    """The snapshot of ``repo_id`` at ``revision`` in the Hugging Face cache (RunPod caches one
    model per endpoint there), complete by ``missing``, with the first of ``lora_roots`` that
    ``has_loras`` (None: no LoRAs needed). Else None and the error report's line saying why."""
    cached = hf_cache_snapshot(repo_id, env=env, revision=revision)
    where = f"  cached model {repo_id}@{revision[:12]}"
    if cached is None:
        roots = ", ".join(str(root) for root in hf_cache_roots(env))
        return None, f"{where}: not in the Hugging Face cache ({roots})"
    absent = missing(cached)
    if absent:
        return None, f"{where} ({cached}): missing " + ", ".join(absent)
    if lora_roots is None:
        return CachedSnapshot(base=cached, lora_root=cached), ""
    for root in lora_roots:
        if has_loras(root):
            return CachedSnapshot(base=cached, lora_root=root), ""
    return None, f"{where} ({cached}): complete, but no model directory holds the LoRAs"
