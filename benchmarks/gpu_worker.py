"""GPU worker benchmark: the real architectures at full size with random weights (run by hand).

Nothing is downloaded: both pipelines are built from their published configurations directly on
the GPU in bf16 and timed on one job each, so the figures measure the code and the hardware, not
the weights (random weights take the same time). Prints one table:

* Wan2.2 I2V A14B, 81 frames at 832x480, 4 lightning steps: seconds split into text encoding,
  denoising and VAE decode, plus peak GPU memory;
* Qwen-Image-Edit at 1 MP, 8 lightning steps: seconds per image and peak memory.

Anchors: LightX2V reports 14 s for a 4-step 480p clip on an H200; one H200 run of Qwen-Image-Edit
at 1024^2 and 50 steps took 17.8 s.

    python benchmarks/gpu_worker.py            # on a CUDA machine (needs ~80 GB for A14B)
    python benchmarks/gpu_worker.py --tiny     # the same code on the CPU with tiny configs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_qwen import bench_qwen
from gpu_wan import bench_wan


def _gib(value: Any) -> str:
    return f"{value / 2**30:.1f}" if isinstance(value, int | float) and value else "-"


def _row(name: str, total: float, text: Any, denoise: Any, decode: Any, peak: Any) -> str:
    def cell(x: Any) -> str:
        return f"{x:.2f}" if isinstance(x, int | float) else "-"

    return (
        f"| {name} | {total:.2f} | {cell(text)} | {cell(denoise)} | {cell(decode)} | {_gib(peak)} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="tiny configs on the CPU (smoke test)")
    parser.add_argument("--skip-wan", action="store_true")
    parser.add_argument("--skip-qwen", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    device = "cpu" if args.tiny else "cuda"
    results: dict[str, Any] = {}
    rows: list[str] = []
    if not args.skip_wan:
        if args.tiny:
            wan = bench_wan(device, frames=9, width=128, height=128, tiny=True)
        else:
            wan = bench_wan(device)
        results["wan"] = wan
        total = wan.get("total_s") or wan["first_total_s"]
        rows.append(
            _row(
                ("tiny Wan2.2 I2V " if args.tiny else "Wan2.2 I2V A14B ")
                + f"{wan['width']}x{wan['height']}x{wan['frames']}, "
                f"{wan['steps']} steps ({wan['device']})",
                total,
                wan.get("text_encode_s"),
                wan.get("denoise_s"),
                wan.get("decode_s"),
                wan.get("peak_memory_bytes"),
            )
        )
    if not args.skip_qwen:
        qwen = bench_qwen(device, megapixels=0.02 if args.tiny else 1.0, tiny=args.tiny)
        results["qwen"] = qwen
        seconds = qwen["seconds"]
        rows.append(
            _row(
                ("tiny " if args.tiny else "")
                + f"Qwen-Image-Edit {qwen['output']}, {qwen['steps']} steps ({qwen['device']})",
                seconds["total"],
                seconds.get("text_encode"),
                seconds.get("denoise"),
                seconds.get("decode"),
                qwen.get("peak_memory_bytes"),
            )
        )
    print("| job | total s | text encode s | denoise s | VAE decode s | peak GiB |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
