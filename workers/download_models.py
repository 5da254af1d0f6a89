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
    # the Dockerfiles' steps: one image layer each (N = BAKE_LAYERS), then a check
    python workers/download_models.py --worker edit --target /models/qwen-edit --bake 1 --layer 1/N
    ...                                                                     # --layer 2/N .. N/N
    python workers/download_models.py --worker edit --target /models/qwen-edit --bake 1 --verify
    # only the LoRAs (the snapshot comes from a RunPod cached model): layer K holds LoRA K
    python workers/download_models.py --worker edit --target /models/qwen-edit --bake loras \\
        --layer 1/N

**Layers.** Baked into one ``RUN``, 60-140 GB of weights would be one image layer: registries cap
a layer's size (GHCR is reported to refuse layers over ~10 GB) and a single huge layer downloads
on one connection. ``--layer K/N`` makes one N-th of the bake. Layer 1 fetches everything but the
weights (the model index, configs, tokenizers and the ``*.safetensors.index.json`` files that
name each component's shards) and *plans* layers 2..N: the weight files and LoRAs, cut in order
into N-1 groups with the largest as small as possible. The plan is written to
``<target>/.videokit-bake-plan.json`` (a few KB, in layer 1) and each later step fetches exactly
its group from it, so every step agrees on the cut even if the Hub answers differently between
steps. Sizes come from the Hub's file listing (a dry run of the same ``snapshot_download``,
which reads each file's size with a HEAD request); where it cannot be read, a sharded
component's shards are estimated from its index (``total_size`` over the shard count), the LoRAs
from the table's sizes, and a component without an index is planned at a guessed 1 GB, which
the log line says. A group over ``--max-layer-gb`` (9.5) stops the build at layer 1, asking for
more steps, rather than failing at push time; a single file over it cannot be split and gets a
layer of its own, which the log says too (a registry with a 10 GB cap would refuse that layer).
Each Dockerfile ``RUN`` is one layer: ``BAKE_LAYERS`` below is N, and ``workers/bake_steps.py``
writes the Dockerfiles' steps from it.

**LoRAs only.** ``--bake loras`` (``BAKE_MODELS=loras``) bakes the mode's files alone, the
Lightning LoRAs (1-2.5 GB), for an endpoint whose snapshot is a RunPod cached model (one model
per endpoint: the base snapshot). ``--layer K/N`` fetches the K-th file (the last layer any
left), nothing past them, and ``--verify`` checks those files only.

``--model`` / ``--mode`` default to ``VIDEOKIT_QWEN_MODEL`` / ``VIDEOKIT_WAN_MODEL`` and
``VIDEOKIT_QWEN_MODE`` / ``VIDEOKIT_WAN_MODE``, then the engines' defaults; ``--target`` to
``VIDEOKIT_MODEL_DIR``, then the network volume's ``/runpod-volume/models/<qwen-edit|wan>``.

A Hugging Face token is optional (the repositories are public; a token raises rate limits). It
is read from ``--token-file``, else the BuildKit secret ``/run/secrets/hf_token``, else
``HF_TOKEN``; never from the command line, and never printed.

Exit codes: 0 done (or nothing to do), 1 files missing (``--verify``, or after a download) or
weight layers that would be too large (layer 1), 2 bad arguments, downloads disabled
(``HF_HUB_OFFLINE=1``), or a weight layer without layer 1's plan.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from types import ModuleType
from typing import Any

#: The largest layer a bake step may make, GB (below the ~10 GB some registries accept).
MAX_LAYER_GB = 9.5
#: How many image layers the Dockerfiles bake the weights in (``--layer K/BAKE_LAYERS``): layer
#: 1 the configs and the plan, the others the weights. ``workers/bake_steps.py`` writes the
#: Dockerfiles' RUN steps from this number; a test checks they agree.
BAKE_LAYERS = 30
#: Layer 1's plan of the weight layers, in the target directory.
PLAN_FILE = ".videokit-bake-plan.json"
# A weight file whose size neither the Hub's listing nor an index states is planned at this size,
# GB (and the log says it is a guess).
_GUESSED_GB = 1.0


def _load_sibling(name: str) -> ModuleType:
    """``workers/<name>.py``, by path: this script runs from anywhere (a Docker layer, a pod)."""
    path = Path(__file__).resolve().with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"videokit_worker_{name}", path)
    if spec is None or spec.loader is None:  # pragma: no cover - the file ships beside us
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


models = _load_sibling("models")
hub_fetch = _load_sibling("hub_fetch")


# -- layers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """One thing a weight layer fetches: snapshot files matching ``pattern``, or a table file."""

    name: str  # for the log: the snapshot path or the file's local path
    approx_bytes: int
    pattern: str | None = None  # a snapshot path (or glob), relative to the snapshot folder
    file: Any = None  # a RepoFile of the mode
    #: where ``approx_bytes`` comes from: "hub" (the Hub's listing: exact), "index" (the
    #: component's total_size over its shards), "table" (workers/models.py) or "guess"
    size_from: str = "guess"


def non_weight_patterns(choice: Any) -> list[str]:
    """Layer 1: the table's snapshot patterns less the weights (configs, indexes, tokenizers)."""
    return [p for p in choice.snapshot.allow_patterns if not p.endswith(".safetensors")]


def weight_patterns(choice: Any) -> list[str]:
    """The weight files of the snapshot's weight components, as download patterns."""
    return [f"{component}/*.safetensors" for component in choice.snapshot.weight_components]


def hub_weight_sizes(
    choice: Any, target: Path, token: str | None, hub: Any = None
) -> tuple[dict[str, int] | None, str]:
    """The size of every weight file of the snapshot, from the Hub's file listing.

    A dry run of ``snapshot_download`` over the weight patterns: huggingface_hub lists the
    repository and reads each file's size (a HEAD request), downloading nothing. Returns the
    sizes by path in the snapshot, or None and why they could not be read (the plan then falls
    back to estimates, and says so).
    """
    snapshot = choice.snapshot
    try:
        with hub_fetch.scratch_home(target):
            infos = hub_fetch.hub_module(hub).snapshot_download(
                snapshot.repo_id,
                revision=snapshot.revision,
                allow_patterns=weight_patterns(choice),
                token=hub_fetch.auth(token),
                dry_run=True,
            )
        sizes = {
            str(info.filename): int(info.file_size) for info in infos if info.file_size is not None
        }
    except Exception as exc:  # any failure only costs the exact sizes, never the build
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    return sizes, f"the Hub's file listing of {snapshot.repo_id}"


def weight_units(
    choice: Any, mode: str, target: Path, *, listed: Mapping[str, int] | None = None
) -> list[Unit]:
    """Everything layers 2..N fetch, in a fixed order, with its size.

    ``listed`` (from :func:`hub_weight_sizes`) gives exact sizes, and names the files of a
    component without an index. Without it, a sharded component's shards come from its
    ``*.safetensors.index.json`` (fetched by layer 1), each estimated at the index's
    ``total_size`` over the shard count (shards are cut to a common maximum size), and a
    component without an index is one unit at a guessed size.
    """
    base = target / choice.snapshot.folder
    if not base.is_dir():
        raise hub_fetch.fail(
            f"{base} is missing: run the first bake layer (--layer 1/N) before the weight layers"
        )
    guess = int(_GUESSED_GB * 1e9)
    units: list[Unit] = []
    for component in choice.snapshot.weight_components:
        folder = base / component
        indexes = sorted(folder.glob("*.safetensors.index.json"))
        if not indexes:
            pattern = f"{component}/*.safetensors"
            found = {name: size for name, size in (listed or {}).items() if fnmatch(name, pattern)}
            units += [
                Unit(name=name, approx_bytes=found[name], pattern=name, size_from="hub")
                for name in sorted(found)
            ] or [Unit(name=pattern, approx_bytes=guess, pattern=pattern, size_from="guess")]
            continue
        for index in indexes:
            try:
                data = json.loads(index.read_text(encoding="utf-8"))
                shards = sorted(set(data["weight_map"].values()))
                total = int(data.get("metadata", {}).get("total_size", 0))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                raise hub_fetch.fail(
                    f"{index} is not a safetensors index: run layer 1 again"
                ) from None
            each = total // len(shards) if shards and total else 0
            for shard in shards:
                name = f"{component}/{shard}"
                if listed is not None and name in listed:
                    size, source = listed[name], "hub"
                elif each:
                    size, source = each, "index"
                else:
                    size, source = guess, "guess"
                units.append(Unit(name=name, approx_bytes=size, pattern=name, size_from=source))
    units += [
        Unit(name=item.local_path, approx_bytes=int(item.approx_gb * 1e9), file=item,
             size_from="table")
        for item in choice.files(mode)
    ]  # fmt: skip
    return units


def split_layers(
    units: Sequence[Unit], groups: int, *, alone_over: int | None = None
) -> list[list[Unit]]:
    """``units`` cut, in order, into ``groups`` contiguous groups, the largest as small as can be.

    A unit over ``alone_over`` bytes (a single file larger than a layer may be) cannot be split:
    it gets a group of its own, and the others are balanced around it. The smallest possible
    largest group is found by bisection (a greedy left-to-right fill tells whether a limit needs
    more than ``groups`` groups); the cut is then that greedy fill, so the same input always
    gives the same layers. Trailing groups are empty when fewer are needed (those bake steps do
    nothing); more than ``groups`` are returned when even one unit per group would not fit.
    """
    sizes = [max(1, unit.approx_bytes) for unit in units]

    def alone(size: int) -> bool:
        return alone_over is not None and size > alone_over

    def fill(limit: int) -> list[list[Unit]]:
        out: list[list[Unit]] = [[]]
        held = 0
        for unit, size in zip(units, sizes, strict=True):
            if out[-1] and (alone(size) or held + size > limit):
                out.append([])
                held = 0
            out[-1].append(unit)
            held = limit + 1 if alone(size) else held + size  # nothing joins a lone unit
        return out

    if not units:
        return [[] for _ in range(groups)]
    shared = [size for size in sizes if not alone(size)]
    low, high = max(shared, default=1), max(sum(shared), 1)
    if len(fill(high)) > groups:
        return fill(high)
    while low < high:
        middle = (low + high) // 2
        if len(fill(middle)) <= groups:
            high = middle
        else:
            low = middle + 1
    cut = fill(low)
    return cut + [[] for _ in range(groups - len(cut))]


def _describe(group: Sequence[Unit]) -> str:
    size_gb = sum(u.approx_bytes for u in group) / 1e9
    estimated = sorted({u.size_from for u in group} - {"hub"})
    how = f" (sizes from: {', '.join(estimated)})" if estimated else ""
    return f"~{size_gb:.1f} GB{how}: {', '.join(u.name for u in group)}"


def _oversize_note(group: Sequence[Unit], cap: float) -> str | None:
    if len(group) == 1 and group[0].approx_bytes / 1e9 > cap:
        return (
            f"note: {group[0].name} alone is ~{group[0].approx_bytes / 1e9:.1f} GB, over the "
            f"{cap} GB layer cap; one file cannot be split, so it gets a layer of its own (a "
            "registry that refuses layers over ~10 GB will refuse this one)"
        )
    return None


def _plan_layers(
    choice: Any, mode: str, target: Path, token: str | None, layers: int, cap: float, hub: Any
) -> int:
    """Layer 1's second half: measure, cut into ``layers - 1`` groups, check, write the plan."""
    listed, source = hub_weight_sizes(choice, target, token, hub)
    if listed is None:
        print(f"sizes: the Hub's file listing failed ({source}); planning with estimates")
    else:
        print(f"sizes: {source}")
    units = weight_units(choice, mode, target, listed=listed)
    for unit in units:
        if unit.size_from == "guess":
            print(
                f"size of {unit.name} unknown (no index, and nothing from the Hub's listing): "
                f"planned at a guessed {_GUESSED_GB} GB"
            )
    groups = split_layers(units, layers - 1, alone_over=int(cap * 1e9))
    over = [
        (k, group)
        for k, group in enumerate(groups, 2)
        if len(group) > 1 and sum(u.approx_bytes for u in group) / 1e9 > cap
    ]
    if len(groups) > layers - 1 or over:
        worst = max(sum(u.approx_bytes for u in g) for g in groups) / 1e9
        print(
            f"error: {len(units)} weight files (~{sum(u.approx_bytes for u in units) / 1e9:.1f}"
            f" GB) do not fit {layers - 1} weight layers of at most {cap} GB (the largest would"
            f" hold ~{worst:.1f} GB)\n"
            "hint: add bake steps (raise BAKE_LAYERS in workers/download_models.py, then run"
            " workers/bake_steps.py), or raise --max-layer-gb",
            file=sys.stderr,
        )
        return 1
    for k, group in enumerate(groups, 2):
        print(f"  layer {k}/{layers}: {_describe(group) if group else 'nothing'}")
        note = _oversize_note(group, cap)
        if note:
            print(f"  {note}")
    plan = {
        "model": choice.key,
        "mode": mode,
        "layers": layers,
        "groups": [
            [
                {"name": u.name, "bytes": u.approx_bytes, "size_from": u.size_from}
                | ({"pattern": u.pattern} if u.pattern is not None else {})
                | ({"file": u.file.local_path} if u.file is not None else {})
                for u in group
            ]
            for group in groups
        ],
    }
    (target / PLAN_FILE).write_text(json.dumps(plan, indent=1) + "\n", encoding="utf-8")
    return 0


def read_plan(choice: Any, mode: str, target: Path, layers: int) -> list[list[Unit]]:
    """The weight groups layer 1 planned into ``target`` (exit 2 if absent or for another bake)."""
    path = target / PLAN_FILE
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
        made_for = (plan["model"], plan["mode"], plan["layers"])
        entries = plan["groups"]
    except (OSError, ValueError, KeyError, TypeError):
        raise hub_fetch.fail(
            f"{path} is missing or unreadable: run the first bake layer (--layer 1/{layers}) "
            "before the weight layers"
        ) from None
    if made_for != (choice.key, mode, layers):
        raise hub_fetch.fail(
            f"{path} plans {made_for[0]} ({made_for[1]}) in {made_for[2]} layers, not "
            f"{choice.key} ({mode}) in {layers}: run --layer 1/{layers} again"
        )
    files = {item.local_path: item for item in choice.files(mode)}
    return [
        [
            Unit(
                name=e["name"],
                approx_bytes=int(e["bytes"]),
                pattern=e.get("pattern"),
                file=files[e["file"]] if "file" in e else None,
                size_from=e["size_from"],
            )
            for e in group
        ]
        for group in entries
    ]


def _bake_layer(
    choice: Any,
    mode: str,
    target: Path,
    token: str | None,
    layer: int,
    layers: int,
    cap: float,
    hub: Any = None,
) -> int:
    if layer == 1:
        patterns = non_weight_patterns(choice)
        shown = ", ".join(patterns)
        print(f"layer 1/{layers}: {choice.snapshot.repo_id} without weights ({shown})")
        hub_fetch.download(choice, mode, target, token, patterns=patterns, files=[], hub=hub)
        print(f"layer 1/{layers}: planning layers 2-{layers} into {target / PLAN_FILE}")
        return _plan_layers(choice, mode, target, token, layers, cap, hub)
    group = read_plan(choice, mode, target, layers)[layer - 2]
    if not group:
        print(f"layer {layer}/{layers}: nothing to fetch (fewer weight files than layers)")
        return 0
    print(f"layer {layer}/{layers}: {_describe(group)}")
    note = _oversize_note(group, cap)
    if note:
        print(note)
    hub_fetch.download(
        choice,
        mode,
        target,
        token,
        patterns=[u.pattern for u in group if u.pattern is not None],
        files=[u.file for u in group if u.file is not None],
        hub=hub,
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


def _report(choice: Any, mode: str, target: Path, *, with_snapshot: bool = True) -> int:
    problems = models.verify(choice, mode, target, snapshot=with_snapshot)
    what = f"{choice.key} ({mode})" + ("" if with_snapshot else " LoRAs")
    if problems:
        print(f"{what} is incomplete in {target} ({len(problems)} problem(s)):")
        for line in problems:
            print(f"  {line}")
        return 1
    print(f"{what}: complete in {target}")
    return 0


def lora_layer(files: Sequence[Any], layer: int, layers: int) -> list[Any]:
    """``--bake loras --layer K/N``: the K-th file, one per layer; layer N also takes any files
    past N (there are never that many); nothing for a layer past the files."""
    return list(files[layer - 1 :] if layer == layers else files[layer - 1 : layer])


def _bake_loras(
    choice: Any,
    mode: str,
    target: Path,
    *,
    layer: tuple[int, int] | None,
    verify: bool,
    dry_run: bool,
    token_file: str | None,
    hub: Any,
) -> int:
    """``--bake loras``: the mode's files (the LoRAs) alone, no snapshot."""
    if verify:
        return _report(choice, mode, target, with_snapshot=False)
    files = list(choice.files(mode))
    first = layer is None or layer[0] == 1
    if first:
        print(
            f"BAKE_MODELS=loras: only the LoRAs of {choice.key} ({mode}) into {target / 'loras'};"
            f" the worker loads {choice.snapshot.repo_id} from a RunPod cached model (or"
            " VIDEOKIT_MODEL_DIR / a network volume)"
        )
        if not files:
            print(f"{choice.key} ({mode}) has no LoRA files: nothing to bake")
    if not files:
        return 0
    token, source = hub_fetch.token_from(token_file)
    if dry_run or layer is None:
        hub_fetch.print_plan(choice, mode, target, source, with_snapshot=False)
        if dry_run:
            print("dry run: nothing downloaded")
            return 0
        hub_fetch.download(choice, mode, target, token, patterns=[], files=files, hub=hub)
        return _report(choice, mode, target, with_snapshot=False)
    picked = lora_layer(files, *layer)
    if not picked:
        return 0  # quiet, like the steps of BAKE_MODELS=0
    for item in picked:
        print(f"layer {layer[0]}/{layer[1]}: {item.local_path} (~{item.approx_gb} GB)")
    hub_fetch.download(choice, mode, target, token, patterns=[], files=picked, hub=hub)
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
        choices=("0", "1", "loras"),
        help="the Dockerfile's BAKE_MODELS: 0 = fetch nothing (weights come from a network"
        " volume), 1 = download and verify, loras = only the LoRA files (the snapshot is a"
        " RunPod cached model)",
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
        help="with --layer 1/N: refuse a plan with a layer of several files over this size,"
        f" GB (default {MAX_LAYER_GB}; one larger file gets a layer of its own)",
    )
    parser.add_argument(
        "--token-file", help=f"file holding a HF token (default {hub_fetch.SECRET_TOKEN_FILE})"
    )
    return parser


def main(argv: list[str] | None = None, *, hub: Any = None) -> int:
    """The command line; ``hub`` replaces huggingface_hub for every download (tests)."""
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
    if args.bake == "loras":
        return _bake_loras(
            choice,
            mode,
            target,
            layer=args.layer,
            verify=args.verify,
            dry_run=args.dry_run,
            token_file=args.token_file,
            hub=hub,
        )
    if args.verify:
        return _report(choice, mode, target)
    token, source = hub_fetch.token_from(args.token_file)
    if args.layer is not None and not args.dry_run:
        layer, layers = args.layer
        return _bake_layer(
            choice, mode, target, token, layer, layers, cap=args.max_layer_gb, hub=hub
        )
    hub_fetch.print_plan(choice, mode, target, source)
    if args.dry_run:
        print("dry run: nothing downloaded")
        return 0
    hub_fetch.download(choice, mode, target, token, hub=hub)
    return _report(choice, mode, target)


if __name__ == "__main__":
    sys.exit(main())
