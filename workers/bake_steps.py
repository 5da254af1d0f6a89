#!/usr/bin/env python3
"""Write the weight-baking steps of both worker Dockerfiles from ``BAKE_LAYERS``.

BuildKit has no loops, and each image layer is one ``RUN``: baking the weights in N layers takes
N ``RUN`` steps (plus a check), one per ``download_models.py --layer K/N``. N lives in one place,
``BAKE_LAYERS`` in ``workers/download_models.py``; this script writes the steps between the
markers in ``workers/<worker>/Dockerfile`` from it::

    python workers/bake_steps.py          # rewrite the steps in both Dockerfiles
    python workers/bake_steps.py --check  # exit 1 naming each Dockerfile that is out of date

Standard library only, like the other scripts here. The tests run ``--check``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

WORKERS = Path(__file__).resolve().parent
BEGIN = "# --- bake steps: written by workers/bake_steps.py from BAKE_LAYERS; do not edit ---"
END = "# --- end of bake steps ---"


def _load(name: str) -> ModuleType:
    path = WORKERS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"videokit_worker_{name}", path)
    if spec is None or spec.loader is None:  # pragma: no cover - the files ship together
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def render(stage: str, layers: int | None = None) -> str:
    """The bake steps of ``stage``'s Dockerfile, markers included, for ``layers`` layers
    (default: ``BAKE_LAYERS``)."""
    download = _load("download_models")
    models = download.models
    n = download.BAKE_LAYERS if layers is None else layers
    if n < 2:
        raise ValueError(f"a bake needs at least 2 layers (1 for configs, 1 for weights), got {n}")
    variable = models.MODEL_ENV[stage]
    target = f"{models.BAKED_ROOT}/{models.MODEL_SUBDIR[stage]}"
    command = (
        f'python workers/download_models.py --worker {stage} --model "${{{variable}}}"'
        f' --target {target} --bake "${{BAKE_MODELS}}"'
    )
    cap = download.MAX_LAYER_GB
    lines = [
        BEGIN,
        f"# One RUN per image layer, {n} of them: layer 1 holds the configs, tokenizers and",
        f"# shard indexes and plans layers 2-{n}, the weight files and LoRAs in {n - 1} groups of",
        f"# at most ~{cap} GB (one file larger than that gets a layer of its own: it cannot be",
        "# split), as registries cap a layer's size (~10 GB on GHCR) and pull layers in parallel.",
        "# Layer 1 stops the build if the groups would be too large (workers/download_models.py,",
        '# "Layers"). BuildKit has no loops, hence one RUN each. BAKE_MODELS=loras bakes only the',
        "# LoRAs, one file per layer (the snapshot then comes from a RunPod cached model).",
    ]
    for k in range(1, n + 1):
        lines += ["RUN --mount=type=secret,id=hf_token \\", f"    {command} --layer {k}/{n}"]
    lines += [f"RUN {command} --verify", END]
    return "\n".join(lines) + "\n"


def updated(text: str, stage: str) -> str:
    """``text`` (a Dockerfile) with its bake steps replaced by :func:`render`'s."""
    begin, end = text.find(BEGIN), text.find(END)
    if begin < 0 or end < begin:
        raise ValueError(f"workers/{stage}/Dockerfile has no bake-step markers ({BEGIN!r} ...)")
    return text[:begin] + render(stage) + text[end + len(END) + 1 :]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    args = parser.parse_args(argv)
    stale: list[str] = []
    for stage in ("edit", "animate"):
        path = WORKERS / stage / "Dockerfile"
        text = path.read_text(encoding="utf-8")
        new = updated(text, stage)
        if new == text:
            continue
        if args.check:
            stale.append(str(path.relative_to(WORKERS.parent)))
        else:
            path.write_text(new, encoding="utf-8")
            print(f"wrote the bake steps of {path.relative_to(WORKERS.parent)}")
    if stale:
        print(
            f"out of date: {', '.join(stale)}\nhint: run python workers/bake_steps.py",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
