"""Qwen-Image-Edit-2509 at full size on one GPU, random weights: how long does a 1 MP edit take?

Needs no download and no Hub access: the three networks are built from their published configs
(``FULL_*`` below: Qwen-Image's 60-layer MMDiT, 20.4 B parameters; Qwen2.5-VL-7B with its vision
tower, 8.3 B; the Qwen-Image VAE, 0.13 B) **directly on the GPU in bf16**: each module is
constructed under ``torch.device(device)`` with bf16 as the default dtype, so no parameter is
ever materialised on the CPU or in fp32 (20.4 B fp32 parameters would not fit an 80 GB GPU).
Random weights compute exactly as fast as trained ones, so the timings are real; the pictures
are noise. The run is the worker's: the pipeline, with the Lightning scheduler and two random
rank-64 Lightning-format LoRAs loaded as PEFT adapters, is served by
:class:`~videokit.worker.qwen.QwenEngine` with the speed options given (``--option
fuse_lora=on``, repeatable), applied by ``prepare()`` as a worker applies them at load (FP8,
attention kernel, regional compile, memory plan, a one-step warm-up), then edit jobs through
the engine's own job path (``edit``), ~1 MP in and out.

Returned (and printed as JSON): the options, the attention kernel in use (or why it fell back),
the FP8 and compile details, load (build + prepare) and warm-up seconds, seconds per phase of the
last job (``text_encode``: Qwen2.5-VL over the prompt and the 384² condition image;
``condition``: resizing + VAE encoding of the input at 1 MP; ``denoise``: all steps; ``decode``:
VAE decoding + postprocessing), the peak GPU memory, and what was built. With a ``vae_dtype``
option, ``psnr_db`` compares the bf16 VAE's decode of the job's own latents with the fp32 VAE's.

Known differences from a real checkpoint: the tokenizer is
:func:`videokit.worker.tiny_qwen.build_tokenizer` (one token per byte for the user's words, the
system prompt as 64 word tokens exactly as the real tokenizer splits it), so a 30-character
prompt is ~30 tokens instead of ~8, a negligible share of the ~8,400 tokens the transformer
sees at 1 MP; the image processor is the PIL one (torchvision-free), a few ms of CPU either way.

    .venv/bin/python benchmarks/gpu_qwen.py                      # GPU: full size, 1 MP, 8 steps
    .venv/bin/python benchmarks/gpu_qwen.py --option fuse_lora=on --option attention=cudnn
    .venv/bin/python benchmarks/gpu_qwen.py --steps 40 --cfg 4   # standard mode, true CFG
    .venv/bin/python benchmarks/gpu_qwen.py --tiny               # CPU: same code, tiny configs
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from videokit.backends.base import JobContext
from videokit.media.images import encode_png
from videokit.protocol import EditRequest, MediaInput
from videokit.worker import qwen, tiny_qwen
from videokit.worker.common import torch_dtype
from videokit.worker.diffusers_engine.options import resolve_options

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
    "FULL_IMAGE_PROCESSOR",
    "FULL_TEXT_CONFIG",
    "FULL_TRANSFORMER_CONFIG",
    "FULL_VAE_CONFIG",
    "FULL_VISION_CONFIG",
    "bench_qwen",
    "build_pipeline",
    "capturing_decode",
    "checkpoint_weights",
    "main",
    "parse_option",
    "vae_psnr",
]

#: Qwen2.5-VL-7B-Instruct's language model (``text_encoder/config.json`` of Qwen-Image-Edit).
FULL_TEXT_CONFIG: Mapping[str, Any] = {
    "vocab_size": 152064,
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "max_position_embeddings": 128000,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
    "tie_word_embeddings": False,
}
#: Its vision tower (675 M parameters): 32 blocks, window attention but for 4 full blocks.
FULL_VISION_CONFIG: Mapping[str, Any] = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "out_hidden_size": 3584,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "tokens_per_second": 2,
}
#: ``transformer/config.json``: 60 dual-stream blocks, 24 heads of 128, text dim 3584.
FULL_TRANSFORMER_CONFIG: Mapping[str, Any] = {
    "patch_size": 2,
    "in_channels": 64,
    "out_channels": 16,
    "num_layers": 60,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 3584,
    "guidance_embeds": False,
    "axes_dims_rope": (16, 56, 56),
}
#: ``vae/config.json``: diffusers' defaults for AutoencoderKLQwenImage (z_dim 16, 8x spatial).
FULL_VAE_CONFIG: Mapping[str, Any] = {
    "base_dim": 96,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
}
#: ``processor/preprocessor_config.json`` (Qwen2-VL image processor).
FULL_IMAGE_PROCESSOR: Mapping[str, Any] = {
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "min_pixels": 3136,
    "max_pixels": 12845056,
}

_LORA_RANK = 64  # the published Lightning files: 425 M parameters = 64 x 110,592 x 60 blocks


@contextlib.contextmanager
def _built_on(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Create every tensor of the modules built in the block on ``device``, floats in ``dtype``.

    Buffers that code creates in an explicit dtype (rotary ``inv_freq`` in fp32) keep it.
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def build_pipeline(*, tiny: bool, device: torch.device, dtype: torch.dtype) -> Any:
    """``QwenImageEditPlusPipeline`` with random weights: full size on ``device``, or tiny."""
    import diffusers
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    d: Any = diffusers  # untyped constructors: used as Any
    vl_model: Any = Qwen2_5_VLForConditionalGeneration
    if tiny:  # fp32, as the tiny engine runs
        return tiny_qwen.build_pipeline().to(device)
    tokenizer = tiny_qwen.build_tokenizer()

    def token_id(token: str) -> int:
        return int(tokenizer.convert_tokens_to_ids(token))

    config = Qwen2_5_VLConfig(
        text_config={
            **FULL_TEXT_CONFIG,
            "bos_token_id": token_id("<|endoftext|>"),
            "eos_token_id": token_id("<|im_end|>"),
        },
        vision_config=dict(FULL_VISION_CONFIG),
        image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"),
    )
    torch.manual_seed(0)
    with _built_on(device, dtype):
        text_encoder = vl_model._from_config(config, dtype=dtype)
        transformer = d.QwenImageTransformer2DModel(**FULL_TRANSFORMER_CONFIG)
        vae = d.AutoencoderKLQwenImage(**FULL_VAE_CONFIG)
    for module in (text_encoder, transformer, vae):
        module.eval().requires_grad_(False)
    pipe = d.QwenImageEditPlusPipeline(
        scheduler=d.FlowMatchEulerDiscreteScheduler.from_config(
            dict(tiny_qwen.QWEN_SCHEDULER_CONFIG)
        ),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        processor=tiny_qwen.make_processor(
            Qwen2VLImageProcessorPil(**FULL_IMAGE_PROCESSOR), tokenizer
        ),
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _picture(width: int, height: int) -> bytes:
    """A smooth synthetic photo stand-in, as a PNG (content does not change the cost)."""
    x = torch.linspace(0, 1, width).view(1, -1).expand(height, -1)
    y = torch.linspace(0, 1, height).view(-1, 1).expand(-1, width)
    rgb = torch.stack([x, y, 0.5 + 0.5 * torch.sin(6 * math.pi * x * y)], dim=-1)
    return encode_png(Image.fromarray((rgb * 255).to(torch.uint8).numpy()))


def bench_qwen(
    device: str = "cuda",
    megapixels: float = 1.0,
    steps: int = 8,
    *,
    tiny: bool = False,
    images: int = 1,
    cfg_scale: float = 1.0,
    lora: bool = True,
    repeats: int = 1,
    options: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Build the pipeline, prepare the engine with ``options`` and time ``repeats`` ~``megapixels``
    MP edits through its job path; the last one is reported.

    ``steps`` 4 or 8 with ``lora`` runs lightning mode (shift-3 scheduler, rank-64 adapters, CFG
    off); otherwise standard mode, with true CFG when ``cfg_scale > 1`` (a negative prompt is
    given). ``tiny``: tiny configs in fp32 (CPU), the pipeline's input resizing shrunk as in the
    tiny engine. Returns seconds, memory, what ``prepare()`` did and what was built.
    ConfigError: an option this machine (or the worker's loader) refuses.
    """
    torch_device = torch.device(device)
    cuda = torch_device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit(f"device {device!r}: CUDA is not available (use --tiny on a CPU)")
    dtype = torch.float32 if tiny else torch.bfloat16
    lightning = lora and steps in qwen.LIGHTNING_STEPS
    settings = qwen.resolve_settings(
        tiny=tiny,
        mode="lightning" if lightning else "standard",
        dtype="fp32" if tiny else "bf16",
        device=device,
        env={},
    )
    # Not the environment's VIDEOKIT_* variables: a row's options are exactly its own.
    engine_options = resolve_options(dict(options or {}), {})
    qwen.refuse_unsupported(engine_options, settings.dtype)  # what the worker's loader refuses

    built = time.perf_counter()
    pipe = build_pipeline(tiny=tiny, device=torch_device, dtype=dtype)
    # The VAE's weights as built (bf16 at full size, like the checkpoint), for the PSNR check.
    weights = checkpoint_weights(pipe.vae) if engine_options.vae_dtype else None
    if engine_options.vae_dtype:
        pipe.vae.to(torch_dtype(engine_options.vae_dtype))  # as qwen.load_engine loads it
    if lightning:
        pipe.scheduler = pipe.scheduler.from_config(dict(qwen.LIGHTNING_SCHEDULER_CONFIG))
        rank = 4 if tiny else _LORA_RANK
        with warnings.catch_warnings():  # PEFT warns that a second adapter is a second adapter
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            for i, variant in enumerate(qwen.LIGHTNING_STEPS.values()):
                state = tiny_qwen.lightning_lora_state_dict(
                    pipe.transformer, rank=rank, alpha=rank, seed=i, dtype=dtype
                )
                pipe.load_lora_weights(state, adapter_name=variant.adapter)
    if cuda:
        torch.cuda.synchronize(torch_device)
    build_s = time.perf_counter() - built
    weights_bytes = torch.cuda.memory_allocated(torch_device) if cuda else None

    records: list[dict[str, Any]] = []
    engine = qwen.QwenEngine(
        pipe,
        settings,
        log=lambda line: records.append(json.loads(line)),
        image_sizes=(tiny_qwen.VAE_IMAGE_SIZE, tiny_qwen.CONDITION_IMAGE_SIZE) if tiny else None,
        options=engine_options,
    )
    area = round(megapixels * 1024 * 1024)
    width, height = qwen.default_size(1, 1, area=area)  # square, like the published anchors
    request = EditRequest(
        images=[MediaInput.from_bytes(_picture(width, height)) for _ in range(images)],
        prompt="Turn the scene into a watercolour painting at dusk",
        negative_prompt="blurry, low quality" if cfg_scale > 1 else "",
        true_cfg_scale=1.0 if lightning else cfg_scale,
        steps=steps,
        seed=0,
        width=width,
        height=height,
    )
    latents: list[torch.Tensor] = []
    psnr = None
    try:
        started = time.perf_counter()
        prepared = engine.prepare()
        prepare_s = time.perf_counter() - started
        for index in range(max(1, repeats)):
            watch = index == max(1, repeats) - 1 and engine_options.vae_dtype != ""
            with capturing_decode(pipe.vae, latents) if watch else contextlib.nullcontext():
                result = asyncio.run(engine.edit(request, JobContext(f"bench-{index}", "edit")))
        if latents and weights is not None:
            psnr = vae_psnr(pipe.vae, latents[-1], weights)
        lora_params = _parameters(pipe.transformer, lora=True)
        built_params = {
            "transformer": _parameters(pipe.transformer),
            "text_encoder": _parameters(pipe.text_encoder),
            "vae": _parameters(pipe.vae),
        }
    finally:
        engine.close()
    jobs = [r for r in records if r.get("event") == "videokit.qwen.job"]
    job, first = jobs[-1], jobs[0]
    timings = job["timings_ms"]
    seconds = {
        name: round(timings[name] / 1000, 3)
        for name in ("text_encode", "condition", "denoise", "decode", "total")
    }
    warmup = prepared.get("warmup") or {}
    return {
        "model": "qwen",
        "device": torch.cuda.get_device_name(torch_device) if cuda else "cpu",
        "pid": os.getpid(),  # gpu_worker.py runs each configuration in a process of its own
        "tiny": tiny,
        "dtype": str(dtype).removeprefix("torch."),
        "mode": settings.mode,
        "steps": job["steps"],
        "cfg": job["cfg"],
        "transformer_calls_per_step": job["transformer_calls"] / job["steps"],
        "images": images,
        "output": f"{result.width}x{result.height}",
        "options": dict(engine_options.summary()),
        "attention": prepared["attention"],
        "fp8": prepared["fp8"],
        "compiled": prepared["compiled"],
        "memory": prepared["memory"],
        "lora_params": lora_params,
        "lora_fused": engine.options.fuse_lora == "on" and lightning,
        "params": built_params,
        "build_s": round(build_s, 3),
        "prepare_s": round(prepare_s, 3),
        "load_s": round(build_s + prepare_s, 3),
        "warmup_s": round(warmup["ms"] / 1000, 3) if "ms" in warmup else None,
        "seconds": seconds,
        "job_s": round(job["job_ms"] / 1000, 3),  # with input decoding, LoRA switch and PNG
        "first_total_s": round(first["timings_ms"]["total"] / 1000, 3),
        "seconds_per_step": round(seconds["denoise"] / job["steps"], 4),
        "weights_bytes": weights_bytes,
        "peak_memory_bytes": job.get("peak_memory_bytes"),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "psnr_db": _rounded(psnr),
    }


def _parameters(module: Any, *, lora: bool = False) -> int:
    """The model's own parameters (``lora``: its LoRA adapters' instead)."""
    return sum(p.numel() for n, p in module.named_parameters() if ("lora_" in n) == lora)


def _rounded(psnr: float | None) -> float | str | None:
    # JSON has no infinity: identical pixels are said in words.
    if psnr is None or math.isfinite(psnr):
        return None if psnr is None else round(psnr, 2)
    return "identical"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--tiny", action="store_true", help="tiny configs on the CPU (a test)")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --tiny")
    parser.add_argument("--megapixels", type=float, default=None, help="default 1.0 (tiny: 0.1)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--images", type=int, default=1, choices=(1, 2, 3))
    parser.add_argument("--cfg", type=float, default=1.0, help="true CFG scale (standard mode)")
    parser.add_argument("--no-lora", action="store_true", help="no Lightning LoRA (standard)")
    parser.add_argument("--repeats", type=int, default=1, help="jobs; the last one is reported")
    parser.add_argument(
        "--option",
        type=parse_option,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an engine option (docs/workers.md), e.g. fuse_lora=on; repeatable",
    )
    parser.add_argument("--json-out", type=Path, help="also write the result here (JSON)")
    args = parser.parse_args(argv)
    return report_run(
        lambda: bench_qwen(
            device=args.device or ("cpu" if args.tiny else "cuda"),
            megapixels=args.megapixels or (0.1 if args.tiny else 1.0),
            steps=args.steps,
            tiny=args.tiny,
            images=args.images,
            cfg_scale=args.cfg,
            lora=not args.no_lora,
            repeats=args.repeats,
            options=dict(args.option),
        ),
        args.json_out,
    )


if __name__ == "__main__":
    raise SystemExit(main())
