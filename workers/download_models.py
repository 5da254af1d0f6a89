#!/usr/bin/env python3
"""Download the weights a worker needs into its model directory (an image layer or a volume).

What is fetched, and where it goes, comes from the one table in ``workers/models.py``: the layout
the engines load from. Examples::

    # what would be fetched, and where (no network)
    python workers/download_models.py --worker animate --dry-run
    # fill a network volume, from a pod that has it mounted
    HF_HUB_OFFLINE=0 python workers/download_models.py --worker edit \\
        --target /runpod-volume/models/qwen-edit
    # check a directory (exit 1 listing what is missing)
    python workers/download_models.py --worker edit --target /models/qwen-edit --verify
    # the Dockerfile's step: --bake 0 fetches nothing, --bake 1 downloads and verifies
    python workers/download_models.py --worker edit --target /models/qwen-edit --bake 1

``--model`` / ``--mode`` default to ``VIDEOKIT_QWEN_MODEL`` / ``VIDEOKIT_WAN_MODEL`` and
``VIDEOKIT_QWEN_MODE`` / ``VIDEOKIT_WAN_MODE``, then the engines' defaults; ``--target`` to
``VIDEOKIT_MODEL_DIR``, then the network volume's ``/runpod-volume/models/<qwen-edit|wan>``.

A Hugging Face token is optional (the repositories are public; a token raises rate limits). It
is read from ``--token-file``, else the BuildKit secret ``/run/secrets/hf_token``, else
``HF_TOKEN``; never from the command line, and never printed.

Exit codes: 0 done (or nothing to do), 1 files missing (``--verify``, or after a download),
2 bad arguments, or downloads disabled (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

SECRET_TOKEN_FILE = "/run/secrets/hf_token"


def _load_models() -> ModuleType:
    """workers/models.py, by path: this script runs from anywhere (a Docker layer, a pod)."""
    path = Path(__file__).resolve().with_name("models.py")
    spec = importlib.util.spec_from_file_location("videokit_worker_models", path)
    if spec is None or spec.loader is None:  # pragma: no cover - the file ships beside us
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


models = _load_models()


def _fail(message: str) -> SystemExit:
    print(f"error: {message}", file=sys.stderr)
    return SystemExit(2)


def _token(token_file: str | None) -> tuple[str | None, str]:
    """The token and where it came from (the source is printed, the token never)."""
    path = Path(token_file or SECRET_TOKEN_FILE)
    if token_file and not path.is_file():
        raise _fail(f"--token-file {path} does not exist")
    if path.is_file():
        value = path.read_text(encoding="utf-8").strip()
        if value:
            return value, f"secret file {path}"
    value = os.environ.get("HF_TOKEN", "").strip()
    if value:
        return value, "HF_TOKEN from the environment"
    return None, "none (public repositories)"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _print_plan(choice: Any, mode: str, target: Path, token_source: str) -> None:
    snapshot = choice.snapshot
    print(f"{choice.stage} model {choice.key} ({mode} mode): {choice.description}")
    print(f"  about {choice.approx_gb(mode)} GB into {target}")
    print(
        f"  {snapshot.repo_id} @ {snapshot.revision or 'main'} -> {target / snapshot.folder}"
        f" (~{snapshot.approx_gb} GB)"
    )
    print(f"    allow_patterns: {', '.join(snapshot.allow_patterns)}")
    print(f"    complete weights in: {', '.join(snapshot.weight_components)}")
    for item in choice.files(mode):
        print(
            f"  {item.repo_id} @ {item.revision or 'main'}: {item.repo_path}"
            f" -> {target / item.local_path} (~{item.approx_gb} GB)"
        )
    print(f"  token: {token_source}")


def _download(choice: Any, mode: str, target: Path, token: str | None) -> None:
    if _truthy(os.environ.get("HF_HUB_OFFLINE")):
        raise _fail(
            "HF_HUB_OFFLINE is set: downloads are disabled in this environment\n"
            "hint: run with HF_HUB_OFFLINE=0 (the worker image sets it to 1 on purpose)"
        )
    target.mkdir(parents=True, exist_ok=True)
    # huggingface_hub (and hf_xet's chunk cache) write under HF_HOME: a scratch folder, deleted
    # after, so nothing but the weights lands in the image layer or on the volume.
    scratch = Path(tempfile.mkdtemp(prefix=".download-", dir=target))
    os.environ["HF_HOME"] = str(scratch / "hf-home")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    auth: str | bool = token if token else False  # False: never a token found on disk
    try:
        from huggingface_hub import hf_hub_download, snapshot_download

        snapshot = choice.snapshot
        print(f"downloading {snapshot.repo_id} -> {target / snapshot.folder}", flush=True)
        snapshot_download(
            snapshot.repo_id,
            revision=snapshot.revision,
            local_dir=target / snapshot.folder,
            allow_patterns=list(snapshot.allow_patterns),
            token=auth,
            max_workers=8,
        )
        for item in choice.files(mode):
            destination = target / item.local_path
            if destination.is_file() and destination.stat().st_size > 0:
                print(f"present: {destination}", flush=True)
                continue
            print(f"downloading {item.repo_id}: {item.repo_path} -> {destination}", flush=True)
            fetched = hf_hub_download(
                item.repo_id,
                item.repo_path,
                revision=item.revision,
                local_dir=scratch / "files",
                token=auth,
            )
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(fetched, destination)  # same filesystem: a rename
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _report(choice: Any, mode: str, target: Path) -> int:
    problems = models.verify(choice, mode, target)
    if problems:
        print(f"{choice.key} ({mode}) is incomplete in {target} ({len(problems)} problem(s)):")
        for line in problems:
            print(f"  {line}")
        return 1
    print(f"{choice.key} ({mode}): complete in {target}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Download (or check) the weights a videokit worker needs.",
        epilog="models: "
        + ", ".join(
            f"{key} ({c.stage}: {'/'.join(c.modes)})" for key, c in sorted(models.MODELS.items())
        ),
    )
    parser.add_argument("--worker", choices=("edit", "animate"), help="which worker's weights")
    parser.add_argument("--model", help="model key (default: the worker's variable, or default)")
    parser.add_argument("--mode", help="lightning (with the LoRAs) or standard")
    parser.add_argument("--target", help="the worker's model directory (VIDEOKIT_MODEL_DIR)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--dry-run", action="store_true", help="print what would be fetched")
    action.add_argument("--verify", action="store_true", help="check the target; exit 1 if not")
    action.add_argument("--list", action="store_true", help="list the models and exit")
    parser.add_argument(
        "--bake",
        choices=("0", "1"),
        help="the Dockerfile's BAKE_MODELS: 0 = fetch nothing (weights come from a network"
        " volume), 1 = download and verify",
    )
    parser.add_argument(
        "--token-file", help=f"file holding a HF token (default {SECRET_TOKEN_FILE})"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.list:
        for key, choice in sorted(models.MODELS.items()):
            default = " (default)" if models.DEFAULT_MODEL[choice.stage] == key else ""
            sizes = ", ".join(f"{m} ~{choice.approx_gb(m)} GB" for m in choice.modes)
            print(f"{choice.stage:8} {key}{default}: {choice.description} [{sizes}]")
        return 0
    if args.worker is None:
        parser.error("--worker is required")
    stage = args.worker
    try:
        choice = models.choose(stage, args.model or os.environ.get(models.MODEL_ENV[stage]))
    except KeyError as exc:
        parser.error(str(exc.args[0]))
    mode = (args.mode or os.environ.get(models.MODE_ENV[stage]) or choice.default_mode).lower()
    if mode not in choice.modes:
        parser.error(f"model {choice.key} has no {mode!r} mode (modes: {', '.join(choice.modes)})")
    default_dir = models.default_model_dirs(stage)[1]
    target = Path(args.target or os.environ.get("VIDEOKIT_MODEL_DIR") or default_dir).absolute()

    if args.verify:
        return _report(choice, mode, target)
    if args.bake == "0":
        print(
            f"BAKE_MODELS=0: no weights in the image; the {stage} worker loads {choice.key}"
            f" ({mode}) from VIDEOKIT_MODEL_DIR, else {default_dir} (a network volume)"
        )
        return 0
    token, source = _token(args.token_file)
    _print_plan(choice, mode, target, source)
    if args.dry_run:
        print("dry run: nothing downloaded")
        return 0
    _download(choice, mode, target, token)
    return _report(choice, mode, target)


if __name__ == "__main__":
    sys.exit(main())
