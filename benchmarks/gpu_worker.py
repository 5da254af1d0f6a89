"""GPU worker benchmark: the real architectures at full size with random weights (run by hand).

Nothing is downloaded: both pipelines are built from their published configurations directly on
the GPU in bf16 and timed, so the figures measure the code and the hardware, not the weights
(random weights take the same time). Prints one table:

* Wan2.2 I2V A14B, 81 frames at 832x480, 4 lightning steps: seconds per clip split into text
  encoding, denoising and VAE decode, plus peak GPU memory (``benchmarks/gpu_wan.py``);
* Qwen-Image-Edit at 1 MP, 8 lightning steps: seconds per image and peak GPU memory
  (``benchmarks/gpu_qwen.py``).

Each model runs in **its own process**, one after the other: the A14B pipeline holds ~64 GiB that
only a garbage collection would free (diffusers' modules hold reference cycles), and Qwen's
~55 GiB would not fit next to it on an 80 GB card. A fresh process also makes each peak-memory
figure that model's alone, from an empty allocator. Every timed run follows a warm-up run (CUDA
context, cuDNN/cuBLAS autotuning), so the table shows warm seconds; the raw JSON (``--json``)
also has the cold first run.

Anchors: LightX2V reports 14 s for a 4-step 480p clip on an H200; one H200 run of Qwen-Image-Edit
at 1024^2 and 50 steps took 17.8 s.

    python benchmarks/gpu_worker.py            # on a CUDA machine (A14B needs ~70 GB resident)
    python benchmarks/gpu_worker.py --tiny     # the same code on the CPU with tiny configs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

__all__ = ["child_commands", "main", "table"]

HEADER = (
    "| job | s per clip/image | text encode s | denoise s | VAE decode s | peak GPU GiB |",
    "|---|---|---|---|---|---|",
)


def child_commands(*, tiny: bool) -> dict[str, list[str]]:
    """The benchmark each model runs, as the argv of its own Python process."""
    python = sys.executable
    if tiny:
        wan = ["--tiny", "--frames", "9", "--width", "128", "--height", "128"]
        qwen = ["--tiny", "--megapixels", "0.02", "--no-warmup"]
    else:
        wan = ["--frames", "81", "--width", "832", "--height", "480", "--repeats", "2"]
        qwen = ["--megapixels", "1.0", "--steps", "8"]
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
            return {"error": f"exit code {done.returncode}: {reason}"}
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def _seconds(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "-"


def _gib(value: Any) -> str:
    return f"{value / 2**30:.1f}" if isinstance(value, int | float) and value else "-"


def table(results: dict[str, dict[str, Any]]) -> list[str]:
    """The Markdown table of the results of :func:`main`'s children (failed rows say why)."""
    rows = list(HEADER)
    wan = results.get("wan")
    if wan is not None:
        if "error" in wan:
            rows.append(f"| Wan2.2 I2V | failed: {wan['error']} | - | - | - | - |")
        else:
            name = "tiny Wan2.2 I2V" if wan["tiny"] else "Wan2.2 I2V A14B"
            label = (
                f"{name} {wan['width']}x{wan['height']}x{wan['frames']}, {wan['steps']} steps "
                f"({wan['device']})"
            )
            rows.append(
                f"| {label} | {_seconds(wan['total_s'])} | {_seconds(wan['text_encode_s'])} | "
                f"{_seconds(wan['denoise_s'])} | {_seconds(wan['decode_s'])} | "
                f"{_gib(wan['peak_memory_bytes'])} |"
            )
    qwen = results.get("qwen")
    if qwen is not None:
        if "error" in qwen:
            rows.append(f"| Qwen-Image-Edit | failed: {qwen['error']} | - | - | - | - |")
        else:
            name = "tiny Qwen-Image-Edit" if qwen["tiny"] else "Qwen-Image-Edit"
            seconds = qwen["seconds"]
            label = f"{name} {qwen['output']}, {qwen['steps']} steps ({qwen['device']})"
            rows.append(
                f"| {label} | {_seconds(seconds['total'])} | "
                f"{_seconds(seconds.get('text_encode'))} | {_seconds(seconds.get('denoise'))} | "
                f"{_seconds(seconds.get('decode'))} | {_gib(qwen['peak_memory_bytes'])} |"
            )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="tiny configs on the CPU (smoke test)")
    parser.add_argument("--skip-wan", action="store_true")
    parser.add_argument("--skip-qwen", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument(
        "--timeout", type=float, default=1800, help="seconds per model (default 1800)"
    )
    args = parser.parse_args(argv)
    commands = child_commands(tiny=args.tiny)
    results: dict[str, dict[str, Any]] = {}
    for name, skip in (("wan", args.skip_wan), ("qwen", args.skip_qwen)):
        if not skip:
            results[name] = _run_child(commands[name], args.timeout)
    print("\n".join(table(results)), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 1 if any("error" in result for result in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
