"""Find a model's snapshot folder in the Hugging Face cache layout of RunPod's cached models.

RunPod puts an endpoint's cached model under ``/runpod-volume/huggingface-cache/hub`` (its docs,
serverless/endpoints/model-caching) in the Hugging Face cache layout: the files of a commit in
``models--<org>--<name>/snapshots/<commit>/``, and ``refs/<branch>`` holding a branch's commit.
:func:`hf_cache_snapshot` resolves a repository (and a revision: ``main`` by default, a branch or
a 40-hex commit) to that folder. The roots searched, in order (:func:`hf_cache_roots`): RunPod's
location, or ``VIDEOKIT_HF_CACHE_ROOT`` instead of it (the hub folder, as the docs' HF_CACHE_ROOT
names it), then the Hugging Face one: ``HF_HUB_CACHE``, else ``HF_HOME``/hub, else
``XDG_CACHE_HOME``/huggingface/hub, else ``$HOME``/.cache/huggingface/hub. Standard library only;
nothing is downloaded or written, and only ``env`` is read (never ``os.environ``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "CACHE_ROOT_ENV",
    "RUNPOD_HF_CACHE",
    "hf_cache_roots",
    "hf_cache_snapshot",
    "repo_folder_name",
]

#: Where RunPod mounts the cached model of an endpoint (serverless/endpoints/model-caching).
RUNPOD_HF_CACHE = "/runpod-volume/huggingface-cache/hub"
#: Replaces :data:`RUNPOD_HF_CACHE` when set (a hub folder: the one holding ``models--*``).
CACHE_ROOT_ENV = "VIDEOKIT_HF_CACHE_ROOT"

_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")


def repo_folder_name(repo_id: str) -> str:
    """``Org/Name`` as the cache names its folder: ``models--Org--Name``.

    Raises ValueError for anything that is not one ``org/name`` pair of plain names.
    """
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(_NAME.match(p) and ".." not in p for p in parts):
        raise ValueError(f"{repo_id!r} is not a Hugging Face repository id (org/name)")
    return "models--" + "--".join(parts)


def hf_cache_roots(env: Mapping[str, str]) -> list[Path]:
    """The hub folders to search, in order, without duplicates."""
    override = env.get(CACHE_ROOT_ENV, "").strip()
    roots = [Path(override).expanduser() if override else Path(RUNPOD_HF_CACHE)]
    hub = _hf_hub_cache(env)
    if hub is not None and hub not in roots:
        roots.append(hub)
    return roots


def _hf_hub_cache(env: Mapping[str, str]) -> Path | None:
    """The hub cache huggingface_hub itself would use under ``env`` (None: nothing to go by)."""
    if env.get("HF_HUB_CACHE", "").strip():
        return Path(env["HF_HUB_CACHE"].strip()).expanduser()
    if env.get("HF_HOME", "").strip():
        return Path(env["HF_HOME"].strip()).expanduser() / "hub"
    if env.get("XDG_CACHE_HOME", "").strip():
        return Path(env["XDG_CACHE_HOME"].strip()) / "huggingface" / "hub"
    if env.get("HOME", "").strip():
        return Path(env["HOME"].strip()) / ".cache" / "huggingface" / "hub"
    return None


def hf_cache_snapshot(
    repo_id: str, *, env: Mapping[str, str], revision: str | None = None
) -> Path | None:
    """The snapshot folder of ``repo_id`` in the first root that has it; None if none has.

    ``revision``: a 40-hex commit (``snapshots/<commit>``), or a branch or tag whose
    ``refs/<revision>`` names the commit. None means ``main``, and then, if ``refs/main`` is
    absent, the only snapshot present (never a guess between several). Raises ValueError for a
    malformed ``repo_id`` or ``revision``.
    """
    folder = repo_folder_name(repo_id)
    if revision is not None and not _valid_revision(revision):
        raise ValueError(f"{revision!r} is not a revision (a branch, tag or 40-hex commit)")
    for root in hf_cache_roots(env):
        found = _snapshot_in(root / folder, revision)
        if found is not None:
            return found
    return None


def _valid_revision(revision: str) -> bool:
    return bool(_REF.match(revision)) and ".." not in revision and "//" not in revision


def _snapshot_in(model_root: Path, revision: str | None) -> Path | None:
    snapshots = model_root / "snapshots"
    if revision is not None and _COMMIT.match(revision):
        return _existing(snapshots / revision)
    commit = _read_ref(model_root / "refs" / (revision or "main"))
    if commit is not None:
        found = _existing(snapshots / commit)
        if found is not None or revision is not None:
            return found
    if revision is not None:
        return None
    try:
        present = [p for p in snapshots.iterdir() if p.is_dir()]
    except OSError:
        return None
    return present[0] if len(present) == 1 else None


def _read_ref(path: Path) -> str | None:
    try:
        commit = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return commit if _COMMIT.match(commit) else None


def _existing(path: Path) -> Path | None:
    return path if path.is_dir() else None
