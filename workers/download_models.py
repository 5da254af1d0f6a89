#!/usr/bin/env python3
"""Download the weights a worker needs into a model directory (an image layer or a network volume).

What is fetched comes from the one table in ``workers/models.py``; the layout is
``<target>/<org>/<repo>/...`` (see there). Examples::

    # what would be fetched, and where (no network)
    python workers/download_models.py --worker animate --model wan2.2-i2v-a14b \
        --target /runpod-volume/models --dry-run
    # fill a network volume from a pod that has it mounted
    python workers/download_models.py --worker edit --target /runpod-volume/models
    # check a directory (exit 1 listing what is missing)
    python workers/download_models.py --worker edit --target /runpod-volume/models --verify
    # the Dockerfile's build step: --bake 0 fetches nothing, --bake 1 downloads and verifies
    python workers/download_models.py --worker edit --target /models --bake "$BAKE_MODELS"

A Hugging Face token is optional (the repositories are public; a token raises rate limits). It is
read from ``--token-file``, else the BuildKit secret ``/run/secrets/hf_token``, else ``HF_TOKEN`` in
the environment; never from the command line, and it is never printed.

Exit codes: 0 done (or nothing to do), 1 files missing after ``--verify`` or a download, 2 bad
arguments or the environment forbids downloading (``HF_HUB_OFFLINE=1``).
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


def _token(token_file: str | None) -> tuple[str | None, str]:
    """The token and where it came from (the source is printed, the token never)."""
    candidates = [token_file] if token_file else [SECRET_TOKEN_FILE]
    for name in candidates:
        path = Path(name)
        if path.is_file():
            value = path.read_text(encoding="utf-8").strip()
            if value:
                return value, f"secret file {path}"
        elif token_file:
            print(f"error: --token-file {path} does not exist", file=sys.stderr)
            raise SystemExit(2)
    value = os.environ.get("HF_TOKEN", "").strip()
    if value:
        return value, "HF_TOKEN from the environment"
    return None, "none (public repositories)"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _print_plan(choice: Any, target: Path, token_source: str) -> None:
    print(f"{choice.stage} model {choice.key}: {choice.description}")
    print(f"  about {choice.approx_gb} GB into {target}")
    for repo in choice.repos:
        revision = repo.revision or "main"
        print(f"  {repo.repo_id} @ {revision} -> {target / repo.repo_id} (~{repo.approx_gb} GB)")
        print(f"    allow_patterns: {', '.join(repo.allow_patterns)}")
        for name in repo.files:
            print(f"    required: {name}")
        if repo.weight_components:
            print(f"    complete weights in: {', '.join(repo.weight_components)}")
    for lora in choice.loras:
        print(f"  LoRA {lora.name} -> {lora.component}: {lora.path(target)}")
    print(f"  token: {token_source}")


def _download(choice: Any, target: Path, token: str | None) -> None:
    if _truthy(os.environ.get("HF_HUB_OFFLINE")):
        print(
            "error: HF_HUB_OFFLINE is set: downloads are disabled in this environment"
            "\nhint: run with HF_HUB_OFFLINE=0 (the worker image sets it to 1 on purpose)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    # hf_xet keeps a chunk cache under HF_HOME: keep it out of the image / volume and delete it.
    scratch = tempfile.mkdtemp(prefix="videokit-hf-")
    os.environ["HF_HOME"] = scratch
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        from huggingface_hub import snapshot_download

        for repo in choice.repos:
            destination = target / repo.repo_id
            print(f"downloading {repo.repo_id} -> {destination}", flush=True)
            snapshot_download(
                repo.repo_id,
                revision=repo.revision,
                local_dir=destination,
                allow_patterns=list(repo.allow_patterns),
                token=token if token else False,
                max_workers=8,
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _report(choice: Any, target: Path) -> int:
    problems = models.verify(choice, target)
    if problems:
        print(f"{choice.key} is incomplete in {target} ({len(problems)} problem(s)):")
        for line in problems:
            print(f"  {line}")
        return 1
    print(f"{choice.key}: complete in {target}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Download (or check) the weights a videokit worker needs.",
        epilog="Model keys: "
        + ", ".join(f"{k} ({c.stage})" for k, c in sorted(models.MODELS.items())),
    )
    parser.add_argument("--worker", choices=("edit", "animate"), help="which worker's weights")
    parser.add_argument(
        "--model",
        help="model key (default: VIDEOKIT_QWEN_MODEL / VIDEOKIT_WAN_MODEL, else the worker's"
        " default)",
    )
    parser.add_argument(
        "--target",
        help="model directory (default: VIDEOKIT_MODEL_DIR, else /runpod-volume/models)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print what would be fetched")
    mode.add_argument("--verify", action="store_true", help="check the target; exit 1 if not")
    mode.add_argument("--list", action="store_true", help="list the model keys and exit")
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
            print(f"{choice.stage:8} {key}{default}: {choice.description}, ~{choice.approx_gb} GB")
        return 0
    if args.worker is None:
        parser.error("--worker is required")
    stage = args.worker
    try:
        choice = models.choose(stage, args.model or os.environ.get(models.MODEL_ENV[stage]))
    except KeyError as exc:
        parser.error(str(exc.args[0]))
    target = Path(
        args.target or os.environ.get("VIDEOKIT_MODEL_DIR") or models.VOLUME_MODEL_DIR
    ).absolute()

    if args.verify:
        return _report(choice, target)
    if args.bake == "0":
        print(
            f"BAKE_MODELS=0: no weights in the image; the {stage} worker reads {choice.key} from"
            f" VIDEOKIT_MODEL_DIR or {models.VOLUME_MODEL_DIR} (a network volume)"
        )
        return 0
    token, source = _token(args.token_file)
    if args.dry_run:
        _print_plan(choice, target, source)
        print("dry run: nothing downloaded")
        return 0
    _print_plan(choice, target, source)
    _download(choice, target, token)
    return _report(choice, target)


if __name__ == "__main__":
    sys.exit(main())
