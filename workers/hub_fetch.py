"""Fetching from the Hugging Face Hub for workers/download_models.py: the plan printed, the token,
the client, a scratch HF_HOME inside the target, and the download of a model table entry.

Standard library only (huggingface_hub is imported when a download runs), loaded by path beside
the script, as workers/models.py is: both are copied into the image before videokit is.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "SECRET_TOKEN_FILE",
    "auth",
    "download",
    "fail",
    "hub_module",
    "print_plan",
    "refuse_offline",
    "scratch_home",
    "token_from",
    "truthy",
]

#: Where BuildKit mounts the ``hf_token`` secret of a build.
SECRET_TOKEN_FILE = "/run/secrets/hf_token"


def fail(message: str) -> SystemExit:
    print(f"error: {message}", file=sys.stderr)
    return SystemExit(2)


def token_from(token_file: str | None) -> tuple[str | None, str]:
    """The token and where it came from (the source is printed, the token never)."""
    path = Path(token_file or SECRET_TOKEN_FILE)
    if token_file and not path.is_file():
        raise fail(f"--token-file {path} does not exist")
    if path.is_file():
        value = path.read_text(encoding="utf-8").strip()
        if value:
            return value, f"secret file {path}"
    value = os.environ.get("HF_TOKEN", "").strip()
    if value:
        return value, "HF_TOKEN from the environment"
    return None, "none (public repositories)"


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def hub_module(hub: Any) -> Any:
    """The client downloads go through: ``hub`` if given (tests pass a stand-in), else
    ``huggingface_hub``, imported only now (``--dry-run`` and ``--verify`` need none)."""
    return hub if hub is not None else importlib.import_module("huggingface_hub")


def refuse_offline() -> None:
    if truthy(os.environ.get("HF_HUB_OFFLINE")):
        raise fail(
            "HF_HUB_OFFLINE is set: downloads are disabled in this environment\n"
            "hint: run with HF_HUB_OFFLINE=0 (the worker image sets it to 1 on purpose)"
        )


@contextlib.contextmanager
def scratch_home(target: Path) -> Iterator[Path]:
    """A scratch folder in ``target`` that huggingface_hub's own files go to, deleted after.

    huggingface_hub (and hf_xet's chunk cache) write under HF_HOME: pointed here, so nothing but
    the weights lands in the image layer or on the volume.
    """
    target.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".download-", dir=target))
    os.environ["HF_HOME"] = str(scratch / "hf-home")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def auth(token: str | None) -> str | bool:
    return token if token else False  # False: never a token found on disk


def download(
    choice: Any,
    mode: str,
    target: Path,
    token: str | None,
    *,
    patterns: Sequence[str] | None = None,
    files: Sequence[Any] | None = None,
    hub: Any = None,
) -> None:
    """Fetch the snapshot (only ``patterns`` of it, if given) and ``files`` into ``target``.

    ``patterns`` None: the table's patterns (the whole snapshot); ``files`` None: every file of
    the mode. An empty sequence fetches nothing of that kind. Through ``hub`` (default:
    huggingface_hub).
    """
    refuse_offline()
    snapshot = choice.snapshot
    allow = list(snapshot.allow_patterns if patterns is None else patterns)
    wanted = list(choice.files(mode) if files is None else files)
    client = hub_module(hub)
    with scratch_home(target) as scratch:
        if allow:
            print(f"downloading {snapshot.repo_id} -> {target / snapshot.folder}", flush=True)
            client.snapshot_download(
                snapshot.repo_id,
                revision=snapshot.revision,
                local_dir=target / snapshot.folder,
                allow_patterns=allow,
                token=auth(token),
                max_workers=8,
            )
        for item in wanted:
            destination = target / item.local_path
            if destination.is_file() and destination.stat().st_size > 0:
                print(f"present: {destination}", flush=True)
                continue
            print(f"downloading {item.repo_id}: {item.repo_path} -> {destination}", flush=True)
            fetched = client.hf_hub_download(
                item.repo_id,
                item.repo_path,
                revision=item.revision,
                local_dir=scratch / "files",
                token=auth(token),
            )
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(fetched, destination)  # same filesystem: a rename


def print_plan(
    choice: Any, mode: str, target: Path, token_source: str, *, with_snapshot: bool = True
) -> None:
    """What will be fetched for ``choice`` in ``mode``, and where, with the token's source."""
    snapshot = choice.snapshot
    print(f"{choice.stage} model {choice.key} ({mode} mode): {choice.description}")
    size = (
        choice.approx_gb(mode)
        if with_snapshot
        else round(choice.approx_gb(mode) - snapshot.approx_gb, 2)
    )
    print(f"  about {size} GB into {target}")
    if with_snapshot:
        print(
            f"  {snapshot.repo_id} @ {snapshot.revision or 'main'} -> {target / snapshot.folder}"
            f" (~{snapshot.approx_gb} GB)"
        )
        print(f"    allow_patterns: {', '.join(snapshot.allow_patterns)}")
        print(f"    complete weights in: {', '.join(snapshot.weight_components)}")
    else:
        print(f"  not {snapshot.repo_id}: only the LoRAs (--bake loras)")
    for item in choice.files(mode):
        print(
            f"  {item.repo_id} @ {item.revision or 'main'}: {item.repo_path}"
            f" -> {target / item.local_path} (~{item.approx_gb} GB)"
        )
    print(f"  token: {token_source}")
