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
    # everything in one go (--bake 0 fetches nothing, --bake 1 downloads and verifies)
    python workers/download_models.py --worker edit --target /models/qwen-edit --bake 1
    # the Dockerfiles' steps: one image layer each, then a check
    python workers/download_models.py --worker edit --target /models/qwen-edit --bake 1 --layer 1/30
    ...                                                                     # --layer 2/30 .. 30/30
    python workers/download_models.py --worker edit --target /models/qwen-edit --bake 1 --verify

**Layers.** Baked into one ``RUN``, 60-140 GB of weights would be one image layer: registries cap
a layer's size (GHCR is reported to refuse layers over ~10 GB) and a single huge layer downloads
on one connection. ``--layer K/N`` fetches one N-th of the bake: layer 1 everything but the
weights (the model index, configs, tokenizers and the ``*.safetensors.index.json`` files that
name each component's shards), layers 2..N the weight shards and LoRA files, cut in order into
N-1 groups with the largest as small as possible (sizes estimated from each index's
``total_size``). Each Dockerfile ``RUN`` is one layer; a group estimated over
``--max-layer-gb`` (9.5) stops the build asking for more steps, rather than failing at push
time.

``--model`` / ``--mode`` default to ``VIDEOKIT_QWEN_MODEL`` / ``VIDEOKIT_WAN_MODEL`` and
``VIDEOKIT_QWEN_MODE`` / ``VIDEOKIT_WAN_MODE``, then the engines' defaults; ``--target`` to
``VIDEOKIT_MODEL_DIR``, then the network volume's ``/runpod-volume/models/<qwen-edit|wan>``.

A Hugging Face token is optional (the repositories are public; a token raises rate limits). It
is read from ``--token-file``, else the BuildKit secret ``/run/secrets/hf_token``, else
``HF_TOKEN``; never from the command line, and never printed.

Exit codes: 0 done (or nothing to do), 1 files missing (``--verify``, or after a download) or a
layer too large, 2 bad arguments, or downloads disabled (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

SECRET_TOKEN_FILE = "/run/secrets/hf_token"
#: The largest layer a bake step may make, GB (below the ~10 GB some registries accept).
MAX_LAYER_GB = 9.5
# A weight file whose size no index states (a single unsharded .safetensors: a VAE, a small
# model) is planned at this size, GB.
_UNINDEXED_GB = 1.0


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


def _download(
    choice: Any,
    mode: str,
    target: Path,
    token: str | None,
    *,
    patterns: Sequence[str] | None = None,
    files: Sequence[Any] | None = None,
) -> None:
    """Fetch the snapshot (only ``patterns`` of it, if given) and ``files`` into ``target``.

    ``patterns`` None: the table's patterns (the whole snapshot); ``files`` None: every file of
    the mode. An empty sequence fetches nothing of that kind.
    """
    if _truthy(os.environ.get("HF_HUB_OFFLINE")):
        raise _fail(
            "HF_HUB_OFFLINE is set: downloads are disabled in this environment\n"
            "hint: run with HF_HUB_OFFLINE=0 (the worker image sets it to 1 on purpose)"
        )
    snapshot = choice.snapshot
    allow = list(snapshot.allow_patterns if patterns is None else patterns)
    wanted = list(choice.files(mode) if files is None else files)
    target.mkdir(parents=True, exist_ok=True)
    # huggingface_hub (and hf_xet's chunk cache) write under HF_HOME: a scratch folder, deleted
    # after, so nothing but the weights lands in the image layer or on the volume.
    scratch = Path(tempfile.mkdtemp(prefix=".download-", dir=target))
    os.environ["HF_HOME"] = str(scratch / "hf-home")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    auth: str | bool = token if token else False  # False: never a token found on disk
    try:
        from huggingface_hub import hf_hub_download, snapshot_download

        if allow:
            print(f"downloading {snapshot.repo_id} -> {target / snapshot.folder}", flush=True)
            snapshot_download(
                snapshot.repo_id,
                revision=snapshot.revision,
                local_dir=target / snapshot.folder,
                allow_patterns=allow,
                token=auth,
                max_workers=8,
            )
        for item in wanted:
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


# -- layers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """One thing a weight layer fetches: snapshot files matching ``pattern``, or a table file."""

    name: str  # for the log: the snapshot path or the file's local path
    approx_bytes: int
    pattern: str | None = None  # a snapshot path (or glob), relative to the snapshot folder
    file: Any = None  # a RepoFile of the mode


def non_weight_patterns(choice: Any) -> list[str]:
    """Layer 1: the table's snapshot patterns less the weights (configs, indexes, tokenizers)."""
    return [p for p in choice.snapshot.allow_patterns if not p.endswith(".safetensors")]


def weight_units(choice: Any, mode: str, target: Path) -> list[Unit]:
    """Everything layers 2..N fetch, in a fixed order, with its estimated size.

    A sharded component's shards come from its ``*.safetensors.index.json`` (fetched by layer
    1), each estimated at the index's ``total_size`` over the shard count (shards are cut to a
    common maximum size); an unsharded component is one unit.
    """
    base = target / choice.snapshot.folder
    if not base.is_dir():
        raise _fail(
            f"{base} is missing: run the first bake layer (--layer 1/N) before the weight layers"
        )
    units: list[Unit] = []
    for component in choice.snapshot.weight_components:
        folder = base / component
        indexes = sorted(folder.glob("*.safetensors.index.json"))
        if not indexes:
            units.append(
                Unit(
                    name=f"{component}/*.safetensors",
                    approx_bytes=int(_UNINDEXED_GB * 1e9),
                    pattern=f"{component}/*.safetensors",
                )
            )
            continue
        for index in indexes:
            try:
                data = json.loads(index.read_text(encoding="utf-8"))
                shards = sorted(set(data["weight_map"].values()))
                total = int(data.get("metadata", {}).get("total_size", 0))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                raise _fail(f"{index} is not a safetensors index: run layer 1 again") from None
            each = total // len(shards) if shards and total else int(_UNINDEXED_GB * 1e9)
            units += [
                Unit(name=f"{component}/{shard}", approx_bytes=each, pattern=f"{component}/{shard}")
                for shard in shards
            ]
    units += [
        Unit(name=item.local_path, approx_bytes=int(item.approx_gb * 1e9), file=item)
        for item in choice.files(mode)
    ]
    return units


def split_layers(units: Sequence[Unit], groups: int) -> list[list[Unit]]:
    """``units`` cut, in order, into ``groups`` contiguous groups, the largest as small as can be.

    The smallest possible largest group is found by bisection (a greedy left-to-right fill
    tells whether a limit needs more than ``groups`` groups); the cut is then that greedy fill,
    so the same input always gives the same layers. Trailing groups are empty when fewer are
    needed (those bake steps do nothing).
    """
    sizes = [max(1, unit.approx_bytes) for unit in units]

    def fill(limit: int) -> list[list[Unit]]:
        out: list[list[Unit]] = [[]]
        held = 0
        for unit, size in zip(units, sizes, strict=True):
            if out[-1] and held + size > limit:
                out.append([])
                held = 0
            out[-1].append(unit)
            held += size
        return out

    if not units:
        return [[] for _ in range(groups)]
    low, high = max(sizes), sum(sizes)
    while low < high:
        middle = (low + high) // 2
        if len(fill(middle)) <= groups:
            high = middle
        else:
            low = middle + 1
    cut = fill(low)
    return cut + [[] for _ in range(groups - len(cut))]


def _bake_layer(
    choice: Any, mode: str, target: Path, token: str | None, layer: int, layers: int, cap: float
) -> int:
    if layer == 1:
        patterns = non_weight_patterns(choice)
        shown = ", ".join(patterns)
        print(f"layer 1/{layers}: {choice.snapshot.repo_id} without weights ({shown})")
        _download(choice, mode, target, token, patterns=patterns, files=[])
        return 0
    group = split_layers(weight_units(choice, mode, target), layers - 1)[layer - 2]
    if not group:
        print(f"layer {layer}/{layers}: nothing to fetch (fewer weight files than layers)")
        return 0
    size_gb = sum(u.approx_bytes for u in group) / 1e9
    print(f"layer {layer}/{layers}: ~{size_gb:.1f} GB: {', '.join(u.name for u in group)}")
    if size_gb > cap and len(group) > 1:
        print(
            f"error: layer {layer}/{layers} would hold ~{size_gb:.1f} GB, over {cap} GB\n"
            f"hint: add bake steps to the Dockerfile (more --layer K/N), or raise --max-layer-gb",
            file=sys.stderr,
        )
        return 1
    _download(
        choice,
        mode,
        target,
        token,
        patterns=[u.pattern for u in group if u.pattern is not None],
        files=[u.file for u in group if u.file is not None],
    )
    return 0


def _layer_arg(text: str) -> tuple[int, int]:
    try:
        layer, layers = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not K/N (e.g. 3/20)") from None
    if layers < 2 or not 1 <= layer <= layers:
        raise argparse.ArgumentTypeError(f"{text!r}: need 1 <= K <= N and N >= 2")
    return layer, layers


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
        "--layer",
        type=_layer_arg,
        metavar="K/N",
        help="with --bake 1: fetch only the K-th of N image layers (1: all but the weights;"
        " 2..N: the weights in N-1 groups, the largest as small as possible)",
    )
    parser.add_argument(
        "--max-layer-gb",
        type=float,
        default=MAX_LAYER_GB,
        help=f"with --layer: refuse a layer estimated over this size (default {MAX_LAYER_GB})",
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

    if args.layer is not None and args.bake is None:
        parser.error("--layer is a bake step: give --bake 0|1 with it")
    if args.bake == "0":
        # Said once per build: by the first layer step (or a lone --bake 0), not by each.
        if (args.layer or (1, 1))[0] == 1 and not args.verify:
            print(
                f"BAKE_MODELS=0: no weights in the image; the {stage} worker loads {choice.key}"
                f" ({mode}) from VIDEOKIT_MODEL_DIR, else {default_dir} (a network volume)"
            )
        return 0
    if args.verify:
        return _report(choice, mode, target)
    token, source = _token(args.token_file)
    if args.layer is not None and not args.dry_run:
        layer, layers = args.layer
        return _bake_layer(choice, mode, target, token, layer, layers, cap=args.max_layer_gb)
    _print_plan(choice, mode, target, source)
    if args.dry_run:
        print("dry run: nothing downloaded")
        return 0
    _download(choice, mode, target, token)
    return _report(choice, mode, target)


if __name__ == "__main__":
    sys.exit(main())
