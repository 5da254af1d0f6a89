"""GPU worker benchmark: each speed option on the full-size architectures, random weights (by hand).

Nothing is downloaded: both pipelines are built from their published configurations directly on
the GPU in bf16 and served by the worker's own engines (``benchmarks/gpu_wan.py``,
``benchmarks/gpu_qwen.py``), so the figures measure the code and the hardware, not the weights
(random weights take the same time). One run times a matrix, per model:

* the baseline (every option off), then each option alone (``attention=cudnn|flash3|sage``,
  ``compile=blocks``, ``fp8=weights|dynamic``, ``vae_dtype=bf16``, and for Qwen
  ``fuse_lora=on``), then the combination of those that helped (faster by 2 % or more,
  or 10 % less memory at most 2 % slower; a VAE at 40 dB PSNR or better; one value per option);
* Wan2.2 I2V A14B, 81 frames at 832x480, 4 lightning steps: goal <= 15 s and <= 70 GiB peak on an
  H100; Qwen-Image-Edit at 1 MP, 8 lightning steps: goal <= 4 s.

Each configuration runs in **its own process**, one after the other: the A14B pipeline holds
~64 GiB that only a garbage collection would free (diffusers' modules hold reference cycles), and
a fresh process makes each peak-memory figure that configuration's alone, from an empty
allocator. The engine's warm-up step runs at load (kernels chosen, blocks compiled) and the last
of two jobs is timed, so the table shows warm seconds. A configuration this machine refuses (FP8
without torchao) or that fails is a row that says why, and the run goes on. Prints the card, then
one Markdown table; ``--json`` writes every raw result.

    python benchmarks/gpu_worker.py            # on a CUDA machine (A14B needs ~70 GB resident)
    python benchmarks/gpu_worker.py --only 'wan:*' --only 'qwen:baseline'
    python benchmarks/gpu_worker.py --tiny     # the same code on the CPU with tiny configs
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

__all__ = [
    "GOALS",
    "SINGLE_OPTIONS",
    "Config",
    "Goal",
    "child_commands",
    "combination",
    "header",
    "helped",
    "main",
    "matrix",
    "table",
]

HEADER = (
    "| configuration | total s | text s | condition s | denoise s | decode s | peak GiB "
    "| attention | VAE PSNR dB | speed-up | goal |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
)
MODELS = ("wan", "qwen")
LABELS = {"wan": "Wan", "qwen": "Qwen"}

#: Each option alone, per model. Both VAE rows report the PSNR of the bf16 decode against the fp32
#: one of the same latents; Qwen's VAE already runs in bf16 at full size (the engine dtype), so
#: its row times the default and measures what it costs in quality.
SINGLE_OPTIONS: Mapping[str, tuple[str, ...]] = {
    "wan": (
        "attention=cudnn",
        "attention=flash3",
        "attention=sage",
        "compile=blocks",
        "fp8=weights",
        "fp8=dynamic",
        "vae_dtype=bf16",
    ),
    "qwen": (
        "attention=cudnn",
        "attention=flash3",
        "attention=sage",
        "compile=blocks",
        "fp8=weights",
        "fp8=dynamic",
        "vae_dtype=bf16",
        "fuse_lora=on",
    ),
}
#: Options the worker refuses together (qwen.load_engine: a LoRA cannot be fused into FP8).
EXCLUSIVE: Mapping[str, tuple[frozenset[str], ...]] = {"qwen": (frozenset({"fp8", "fuse_lora"}),)}

# What "helped" means for the combination: this much faster, or this much less memory at no
# real cost in time; a bf16 VAE only above this PSNR (below, banding shows in smooth skies).
MIN_SPEEDUP = 1.02
MIN_MEMORY_SAVING = 0.10
PSNR_FLOOR_DB = 40.0


@dataclass(frozen=True)
class Goal:
    """The issue's target for a model's job at full size on an H100."""

    total_s: float
    peak_gib: float | None = None


GOALS: Mapping[str, Goal] = {"wan": Goal(15.0, 70.0), "qwen": Goal(4.0)}


@dataclass(frozen=True)
class Config:
    """One row of the matrix: a model and the engine options it runs with."""

    model: str
    name: str  # "baseline", "attention=cudnn", "combined"
    options: tuple[str, ...] = ()  # NAME=VALUE

    @property
    def key(self) -> str:
        """``wan:attention=cudnn``: what ``--only`` patterns match."""
        return f"{self.model}:{self.name}"


def matrix(model: str) -> list[Config]:
    """The baseline and each option alone (the combination is decided after they ran)."""
    singles = [Config(model, option, (option,)) for option in SINGLE_OPTIONS[model]]
    return [Config(model, "baseline"), *singles]


def child_commands(*, tiny: bool) -> dict[str, list[str]]:
    """The benchmark each model runs, as the argv of its own Python process (no options yet)."""
    python = sys.executable
    if tiny:
        wan = ["--tiny", "--frames", "9", "--width", "128", "--height", "128", "--repeats", "2"]
        qwen = ["--tiny", "--megapixels", "0.02", "--repeats", "2"]
    else:
        wan = ["--frames", "81", "--width", "832", "--height", "480", "--repeats", "2"]
        qwen = ["--megapixels", "1.0", "--steps", "8", "--repeats", "2"]
    return {
        "wan": [python, str(HERE / "gpu_wan.py"), *wan],
        "qwen": [python, str(HERE / "gpu_qwen.py"), *qwen],
    }


def _run_child(argv: list[str], timeout: float) -> dict[str, Any]:
    """Run one benchmark process; its JSON result, or ``{"error": ...}`` if it failed."""
    env = dict(os.environ)
    # Fewer fragmentation OOMs for the A14B's large, varied activations.
    env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    with tempfile.TemporaryDirectory(prefix="videokit-gpu-bench-") as tmp:
        out = Path(tmp) / "result.json"
        try:
            # The child's own output (its JSON, warnings) goes to our stderr: stdout is the table.
            done = subprocess.run(
                [*argv, "--json-out", str(out)],
                stdout=sys.stderr,
                stderr=subprocess.PIPE,
                text=True,
                timeout=timeout,
                env=env,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        sys.stderr.write(done.stderr)
        if done.returncode != 0 or not out.is_file():
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            reason = lines[-1] if lines else f"exit code {done.returncode}"
            if reason.startswith(("refused: ", "failed: ")):  # the benchmark's own last line
                return {"error": reason}
            return {"error": f"exit code {done.returncode}: {reason}"}
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def _total(result: Mapping[str, Any]) -> float | None:
    seconds = result.get("seconds")
    total = seconds.get("total") if isinstance(seconds, dict) else None
    return float(total) if isinstance(total, int | float) and total > 0 else None


def _fell_back(result: Mapping[str, Any]) -> bool:
    attention = result.get("attention") or {}
    return bool(attention.get("fallback"))


def helped(result: Mapping[str, Any], baseline: Mapping[str, Any]) -> bool:
    """Whether one option's row beat the baseline (see the module docstring)."""
    total, base = _total(result), _total(baseline)
    if "error" in result or total is None or base is None or _fell_back(result):
        return False
    psnr = result.get("psnr_db")
    if isinstance(psnr, int | float) and psnr < PSNR_FLOOR_DB:
        return False
    if base / total >= MIN_SPEEDUP:
        return True
    peak, base_peak = result.get("peak_memory_bytes"), baseline.get("peak_memory_bytes")
    leaner = bool(peak and base_peak and peak <= base_peak * (1 - MIN_MEMORY_SAVING))
    return leaner and total <= base * MIN_SPEEDUP


def combination(model: str, results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The options of the single-option rows that helped, merged into one configuration.

    One value per option (the fastest attention kernel, the fastest FP8 mode) and, of options
    the worker refuses together, the faster. ``results`` by :attr:`Config.key`.
    """
    baseline = results.get(f"{model}:baseline")
    if baseline is None:
        return []
    best: dict[str, tuple[float, str]] = {}
    for config in matrix(model)[1:]:
        result = results.get(config.key)
        if result is None or not helped(result, baseline):
            continue
        total = _total(result)
        assert total is not None
        name = config.name.split("=", 1)[0]
        if name not in best or total < best[name][0]:
            best[name] = (total, config.name)
    for group in EXCLUSIVE.get(model, ()):
        clash = sorted((best[n][0], n) for n in group if n in best)
        for _, name in clash[1:]:
            del best[name]
    return sorted(option for _, option in best.values())


def _seconds(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "-"


def _gib(value: Any) -> str:
    return f"{value / 2**30:.1f}" if isinstance(value, int | float) and value else "-"


def _attention(result: Mapping[str, Any]) -> str:
    attention = result.get("attention") or {}
    used = str(attention.get("used", "-"))
    reason = attention.get("fallback")
    return f"{used} (fallback: {' '.join(str(reason).split())})" if reason else used


def _psnr(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, int | float) else str(value or "-")


def _goal(model: str, result: Mapping[str, Any]) -> str:
    if result.get("tiny"):
        return "n/a (tiny)"
    goal, total = GOALS[model], _total(result)
    if total is None:
        return "-"
    missed = []
    if total > goal.total_s:
        missed.append(f"{total:.1f} s > {goal.total_s:g} s")
    peak = result.get("peak_memory_bytes")
    if goal.peak_gib is not None and isinstance(peak, int) and peak / 2**30 > goal.peak_gib:
        missed.append(f"{peak / 2**30:.1f} GiB > {goal.peak_gib:g} GiB")
    return "met" if not missed else "missed: " + ", ".join(missed)


def _row(label: str, model: str, result: Mapping[str, Any], base: float | None) -> str:
    if "error" in result or "skipped" in result:
        error = result.get("error")
        reason = result["skipped"] if error is None else error
        if error is not None and not str(error).startswith(("refused: ", "failed: ")):
            reason = f"failed: {error}"
        return f"| {label} | {' '.join(str(reason).split())} | - | - | - | - | - | - | - | - | - |"
    seconds = result["seconds"]
    total = _total(result)
    speedup = f"{base / total:.2f}x" if base and total else "-"
    cells = [
        label,
        _seconds(seconds.get("total")),
        _seconds(seconds.get("text_encode")),
        _seconds(seconds.get("condition")),
        _seconds(seconds.get("denoise")),
        _seconds(seconds.get("decode")),
        _gib(result.get("peak_memory_bytes")),
        _attention(result),
        _psnr(result.get("psnr_db")),
        speedup,
        _goal(model, result),
    ]
    return "| " + " | ".join(cells) + " |"


def table(rows: Sequence[tuple[Config, Mapping[str, Any]]]) -> list[str]:
    """The Markdown table of the matrix's results, in order (failed rows say why)."""
    lines = list(HEADER)
    for config, result in rows:
        baseline = dict(rows).get(Config(config.model, "baseline"), {})
        label = f"{LABELS[config.model]} {config.name}"
        if config.name == "combined" and config.options:
            label += f" ({', '.join(config.options)})"
        lines.append(_row(label, config.model, result, _total(baseline)))
    return lines


def header(rows: Sequence[tuple[Config, Mapping[str, Any]]]) -> list[str]:
    """The lines above the table: the card (torch.cuda.get_device_name) and each model's job."""
    ran = [(config, result) for config, result in rows if "seconds" in result]
    card = next((str(result["device"]) for _, result in ran), "unknown (no configuration ran)")
    tiny = any(result.get("tiny") for _, result in ran)
    lines = [f"card: {card}" + (" (tiny configs on the CPU)" if tiny else "")]
    jobs = []
    for model in MODELS:
        result = next((r for c, r in ran if c.model == model), None)
        if result is None:
            continue
        if model == "wan":
            size = f"{result['width']}x{result['height']}x{result['frames']}"
            jobs.append(f"Wan2.2 I2V A14B {size}, {result['steps']} steps")
        else:
            jobs.append(f"Qwen-Image-Edit {result['output']}, {result['steps']} steps")
    if jobs:
        lines.append(f"jobs: {'; '.join(jobs)} (random weights, warm: after the warm-up step)")
    return lines


def _selected(key: str, only: Sequence[str]) -> bool:
    return not only or any(fnmatch.fnmatchcase(key, pattern) for pattern in only)


def _run(config: Config, command: list[str], timeout: float) -> dict[str, Any]:
    print(f"== {config.key} ==", file=sys.stderr, flush=True)
    argv = [*command]
    for option in config.options:
        argv += ["--option", option]
    return _run_child(argv, timeout)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="tiny configs on the CPU (smoke test)")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="PATTERN",
        help="run only the configurations matching (glob, repeatable): wan:baseline, "
        "'qwen:attention=*', '*:combined'",
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument(
        "--timeout", type=float, default=1800, help="seconds per configuration (default 1800)"
    )
    args = parser.parse_args(argv)
    commands = child_commands(tiny=args.tiny)
    rows: list[tuple[Config, dict[str, Any]]] = []
    for model in MODELS:
        results: dict[str, dict[str, Any]] = {}
        for config in matrix(model):
            if _selected(config.key, args.only):
                results[config.key] = _run(config, commands[model], args.timeout)
                rows.append((config, results[config.key]))
        if not _selected(f"{model}:combined", args.only):
            continue
        options = combination(model, results)
        combined = Config(model, "combined", tuple(options))
        if len(options) >= 2:
            rows.append((combined, _run(combined, commands[model], args.timeout)))
        elif options:
            rows.append((combined, {"skipped": f"not run: only {options[0]} helped (its row)"}))
        elif f"{model}:baseline" in results:
            rows.append((combined, {"skipped": "not run: no option helped"}))
    print("\n".join([*header(rows), "", *table(rows)]), flush=True)
    if args.json:
        raw = {
            "card": header(rows)[0].removeprefix("card: "),
            "results": {config.key: {"options": list(config.options), **r} for config, r in rows},
        }
        args.json.write_text(json.dumps(raw, indent=2, default=str))
    failed = [r for _, r in rows if "error" in r and not str(r["error"]).startswith("refused: ")]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
