"""Where a 4-step Wan2.2 I2V A14B job spends its time, at full size, with random weights.

Builds the published A14B architecture (two 40-layer, 5120-wide experts of ~14 B parameters, a
UMT5-XXL text encoder, the Wan2.1 VAE) with random weights, directly on the GPU in bf16 (the VAE in
fp32, as the engine runs it): nothing is downloaded and nothing is materialised on the CPU first.
The engine's own code then runs one lightning generation: the same scheduler (sigmas
[1, .75, .5, .25], shift 5 → timesteps [1000, 937.5, 833.3, 625]), the same phase timers, guidance
1 for both experts. Random weights make meaningless pictures but the same arithmetic, so the
timings and the memory are those of the real model (fused LoRAs add no work per step).

    .venv/bin/python benchmarks/gpu_wan.py                  # CUDA, 81 frames at 832x480
    .venv/bin/python benchmarks/gpu_wan.py --frames 49 --width 1280 --height 720
    .venv/bin/python benchmarks/gpu_wan.py --tiny           # the same path on the CPU, tiny configs

Prints one JSON object: seconds for text encoding, conditioning (the VAE encode of the input
clip), denoising (and per step), VAE decode, plus peak GPU memory. The first run on a fresh
process pays CUDA/cuDNN warm-up; ``--repeats 2`` reports the second as well. Memory: ~69 GB of
weights (2 x 28.6 GB experts + 11.4 GB text encoder + VAE), so an 80 GB card is tight at 480p and
an H200 comfortable.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from videokit.media.images import encode_png
from videokit.protocol import AnimateRequest, MediaInput
from videokit.worker import tiny_wan
from videokit.worker.wan import WanEngine

__all__ = [
    "A14B_TRANSFORMER_CONFIG",
    "UMT5_XXL_CONFIG",
    "WAN21_VAE_CONFIG",
    "bench_wan",
    "build_a14b",
    "main",
]

#: One expert of Wan2.2-I2V-A14B (diffusers' conversion config for it): 40 blocks, 40 heads of
#: 128 (width 5120), FFN 13824, 36 input channels (16 noise + 16 image latents + 4 mask), no CLIP
#: image branch. ~14.3 B parameters.
A14B_TRANSFORMER_CONFIG: Mapping[str, Any] = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 40,
    "attention_head_dim": 128,
    "in_channels": 36,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 13824,
    "num_layers": 40,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": None,
    "added_kv_proj_dim": None,
    "rope_max_seq_len": 1024,
}

#: google/umt5-xxl's encoder (what Wan ships as text_encoder): 24 layers, d_model 4096, 64 heads of
#: 64, gated-GELU FFN 10240, a 256384-token vocabulary. ~5.7 B parameters.
UMT5_XXL_CONFIG: Mapping[str, Any] = {
    "vocab_size": 256384,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
}

#: The Wan2.1 VAE Wan2.2 A14B uses (AutoencoderKLWan's defaults): base width 96, z 16, 8x spatial
#: and 4x temporal compression.
WAN21_VAE_CONFIG: Mapping[str, Any] = {
    "base_dim": 96,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
}

_PROMPT = "a knight in silver armour swings his sword, camera pans left, wind in the trees"


def build_a14b(device: str | torch.device, *, tiny: bool = False) -> Any:
    """The A14B pipeline with random weights on ``device`` (bf16; the tiny one in fp32)."""
    if tiny:
        return tiny_wan.build_tiny_pipeline(device=device)
    return tiny_wan.build_random_pipeline(
        transformer_config=A14B_TRANSFORMER_CONFIG,
        vae_config=WAN21_VAE_CONFIG,
        text_encoder_config=UMT5_XXL_CONFIG,
        device=device,
        dtype=torch.bfloat16,
    )


def _picture(width: int, height: int) -> bytes:
    img = Image.new("RGB", (width, height), (60, 80, 110))
    draw = ImageDraw.Draw(img)
    for x in range(0, width, max(1, width // 24)):
        draw.line([(x, 0), (x, height)], fill=(200, 60 + x % 180, 90), width=3)
    draw.ellipse((width // 3, height // 4, width // 2, height // 2), fill=(250, 200, 40))
    return encode_png(img)


def _parameters(module: Any) -> int:
    return sum(p.numel() for p in module.parameters()) if module is not None else 0


def bench_wan(
    device: str = "cuda",
    frames: int = 81,
    width: int = 832,
    height: int = 480,
    steps: int = 4,
    *,
    tiny: bool = False,
    repeats: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """Build the A14B (or the tiny) pipeline on ``device`` and time ``repeats`` generations.

    Returns seconds per phase of the last run (``text_encode_s``, ``condition_s``,
    ``denoise_s``, ``decode_s``, ``total_s``, ``per_step_s``), ``first_total_s`` (the first
    run, with warm-up), ``build_s``, ``peak_memory_bytes`` (None on the CPU), the timesteps the
    scheduler used and the parameter counts.
    """
    cuda = torch.device(device).type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise RuntimeError("no CUDA device: run with --tiny (CPU) or on a GPU machine")
    started = time.perf_counter()
    pipe = build_a14b(device, tiny=tiny)
    if cuda:
        torch.cuda.synchronize()
    build_s = time.perf_counter() - started
    engine = WanEngine(pipe, model_name="bench-a14b" + ("-tiny" if tiny else ""), mode="lightning")
    request = AnimateRequest(
        image=MediaInput.from_bytes(_picture(width, height)),
        prompt=_PROMPT,
        width=width,
        height=height,
        frames=frames,
        steps=steps,
        seed=seed,
    )
    totals: list[float] = []
    render = None
    try:
        for _ in range(max(1, repeats)):
            render = engine.render_frames(request)
            totals.append(render.timings_ms["total"] / 1000)
    finally:
        engine.close()
    assert render is not None
    timings = {name: ms / 1000 for name, ms in render.timings_ms.items()}
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(torch.device(device)) if cuda else "cpu",
        "pid": os.getpid(),  # gpu_worker.py runs each model in a process of its own
        "tiny": tiny,
        "frames": frames,
        "width": width,
        "height": height,
        "steps": render.steps,
        "timesteps": [round(t, 3) for t in render.timesteps],
        "build_s": round(build_s, 3),
        **{f"{name}_s": round(seconds, 3) for name, seconds in timings.items()},
        "per_step_s": round(timings["denoise"] / render.steps, 3),
        "first_total_s": round(totals[0], 3),
        "peak_memory_bytes": render.peak_memory_bytes,
        "parameters": {
            "transformer": _parameters(pipe.transformer),
            "transformer_2": _parameters(pipe.transformer_2),
            "text_encoder": _parameters(pipe.text_encoder),
            "vae": _parameters(pipe.vae),
        },
    }
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny configs on the CPU (a smoke run)")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --tiny")
    parser.add_argument("--frames", type=int, default=None, help="default 81 (5 with --tiny)")
    parser.add_argument("--width", type=int, default=None, help="default 832 (128 with --tiny)")
    parser.add_argument("--height", type=int, default=None, help="default 480 (128 with --tiny)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json-out", type=Path, help="also write the result here (JSON)")
    args = parser.parse_args(argv)
    small = args.tiny
    result = bench_wan(
        device=args.device or ("cpu" if small else "cuda"),
        frames=args.frames or (5 if small else 81),
        width=args.width or (128 if small else 832),
        height=args.height or (128 if small else 480),
        steps=args.steps,
        tiny=small,
        repeats=args.repeats,
    )
    print(json.dumps(result, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
