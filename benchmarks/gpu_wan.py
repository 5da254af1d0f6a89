"""Where a 4-step Wan2.2 I2V A14B job spends its time, at full size, with random weights.

Builds the published A14B architecture (two 40-layer, 5120-wide experts of ~14 B parameters, a
UMT5-XXL text encoder, the Wan2.1 VAE) with random weights, directly on the GPU in bf16 (the VAE in
fp32, as the engine runs it): nothing is downloaded and nothing is materialised on the CPU first.
The worker's own engine then serves it: :class:`~videokit.worker.wan.WanEngine` with the speed
options given (``--option attention=cudnn``, repeatable), applied by ``prepare()`` exactly as a
worker applies them at load (FP8, attention kernel, regional compile, memory plan, warm-up step),
then one lightning job through ``render_frames`` (the same scheduler, timesteps
[1000, 937.5, 833.3, 625], phase timers and admission as a job). Random weights make meaningless
pictures but the same arithmetic, so the timings and the memory are those of the real model
(fused LoRAs add no work per step).

    .venv/bin/python benchmarks/gpu_wan.py                  # CUDA, 81 frames at 832x480
    .venv/bin/python benchmarks/gpu_wan.py --option attention=cudnn --option compile=blocks
    .venv/bin/python benchmarks/gpu_wan.py --tiny           # the same path on the CPU, tiny configs

Prints one JSON object: the options, the attention kernel in use (or why it fell back), the FP8
and compile details, load (build + prepare) and warm-up seconds, the job's seconds per phase
(text encoding, conditioning, denoising, VAE decode) and its peak GPU memory. With a
``vae_dtype`` option it also decodes the job's own latents with the VAE in bf16 and in fp32 and
reports the PSNR between them (``psnr_db``): the banding check on identical input. Memory: ~69 GB
of weights (2 x 28.6 GB experts + 11.4 GB text encoder + VAE), so an 80 GB card is tight at 480p
and an H200 comfortable.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from videokit.media.images import encode_png
from videokit.protocol import AnimateRequest, MediaInput
from videokit.worker import tiny_wan
from videokit.worker.diffusers_engine.options import resolve_options
from videokit.worker.wan import WanEngine

# The sibling module both GPU benchmarks share, whether run as scripts or imported by the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_options import (
    capturing_decode,
    checkpoint_weights,
    parse_option,
    report_run,
    vae_psnr,
)

__all__ = [
    "A14B_TRANSFORMER_CONFIG",
    "UMT5_XXL_CONFIG",
    "WAN21_VAE_CONFIG",
    "bench_wan",
    "build_a14b",
    "capturing_decode",
    "checkpoint_weights",
    "main",
    "parse_option",
    "vae_psnr",
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
    options: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Build the A14B (or the tiny) pipeline on ``device``, prepare the engine with ``options``
    and time ``repeats`` jobs.

    Returns what ``prepare()`` did (``attention``, ``fp8``, ``compiled``, ``memory``), ``build_s``,
    ``prepare_s``, ``load_s`` (both), ``warmup_s``, ``seconds`` per phase of the last job
    (``text_encode``, ``condition``, ``denoise``, ``decode``, ``total``), ``first_total_s``,
    ``peak_memory_bytes`` (None on the CPU), ``psnr_db`` (with a ``vae_dtype`` option), the
    timesteps and the parameter counts. ConfigError: an option this machine refuses.
    """
    cuda = torch.device(device).type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise RuntimeError("no CUDA device: run with --tiny (CPU) or on a GPU machine")
    given = dict(options or {})
    # Not the environment's VIDEOKIT_* variables: a row's options are exactly its own.
    engine_options = resolve_options(given, {})
    started = time.perf_counter()
    pipe = build_a14b(device, tiny=tiny)
    # The VAE's weights as built (fp32, like the checkpoint), for the PSNR check's decoders.
    weights = checkpoint_weights(pipe.vae) if engine_options.vae_dtype else None
    if engine_options.vae_dtype == "bf16":
        pipe.vae.to(torch.bfloat16)  # as wan.load_engine loads it
    if cuda:
        torch.cuda.synchronize()
    build_s = time.perf_counter() - started
    engine = WanEngine(
        pipe,
        model_name="bench-a14b" + ("-tiny" if tiny else ""),
        mode="lightning",
        name="tiny" if tiny else "diffusers",  # the tiny engine warms up at its small size
        options=engine_options,
        device=device,
    )
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
    latents: list[torch.Tensor] = []
    render = None
    psnr = None
    try:
        started = time.perf_counter()
        prepared = engine.prepare()
        prepare_s = time.perf_counter() - started
        for index in range(max(1, repeats)):
            last = index == max(1, repeats) - 1
            watch = last and engine_options.vae_dtype != ""
            with capturing_decode(pipe.vae, latents) if watch else contextlib.nullcontext():
                render = engine.render_frames(request)
            totals.append(render.timings_ms["total"] / 1000)
        if latents and weights is not None:
            psnr = vae_psnr(pipe.vae, latents[-1], weights)
    finally:
        engine.close()
    assert render is not None
    seconds = {name: round(ms / 1000, 3) for name, ms in render.timings_ms.items()}
    warmup = prepared.get("warmup") or {}
    return {
        "model": "wan",
        "device": torch.cuda.get_device_name(torch.device(device)) if cuda else "cpu",
        "pid": os.getpid(),  # gpu_worker.py runs each configuration in a process of its own
        "tiny": tiny,
        "frames": frames,
        "width": width,
        "height": height,
        "steps": render.steps,
        "timesteps": [round(t, 3) for t in render.timesteps],
        "options": dict(engine_options.summary()),
        "attention": prepared["attention"],
        "fp8": prepared["fp8"],
        "compiled": prepared["compiled"],
        "memory": prepared["memory"],
        "build_s": round(build_s, 3),
        "prepare_s": round(prepare_s, 3),
        "load_s": round(build_s + prepare_s, 3),
        "warmup_s": round(warmup["ms"] / 1000, 3) if "ms" in warmup else None,
        "seconds": seconds,
        "per_step_s": round(seconds["denoise"] / render.steps, 3),
        "first_total_s": round(totals[0], 3),
        "peak_memory_bytes": render.peak_memory_bytes,
        "psnr_db": _rounded(psnr),
        "parameters": {
            "transformer": _parameters(pipe.transformer),
            "transformer_2": _parameters(pipe.transformer_2),
            "text_encoder": _parameters(pipe.text_encoder),
            "vae": _parameters(pipe.vae),
        },
    }


def _rounded(psnr: float | None) -> float | str | None:
    # JSON has no infinity: identical pixels are said in words.
    if psnr is None or math.isfinite(psnr):
        return None if psnr is None else round(psnr, 2)
    return "identical"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny configs on the CPU (a smoke run)")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --tiny")
    parser.add_argument("--frames", type=int, default=None, help="default 81 (5 with --tiny)")
    parser.add_argument("--width", type=int, default=None, help="default 832 (128 with --tiny)")
    parser.add_argument("--height", type=int, default=None, help="default 480 (128 with --tiny)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1, help="jobs; the last one is reported")
    parser.add_argument(
        "--option",
        type=parse_option,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an engine option (docs/workers.md), e.g. attention=cudnn; repeatable",
    )
    parser.add_argument("--json-out", type=Path, help="also write the result here (JSON)")
    args = parser.parse_args(argv)
    small = args.tiny
    return report_run(
        lambda: bench_wan(
            device=args.device or ("cpu" if small else "cuda"),
            frames=args.frames or (5 if small else 81),
            width=args.width or (128 if small else 832),
            height=args.height or (128 if small else 480),
            steps=args.steps,
            tiny=small,
            repeats=args.repeats,
            options=dict(args.option),
        ),
        args.json_out,
    )


if __name__ == "__main__":
    raise SystemExit(main())
