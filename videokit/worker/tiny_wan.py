"""The real Wan2.2 I2V pipeline classes with tiny random weights, built in code, offline.

What the ``tiny`` engine, the worker tests and ``benchmarks/gpu_wan.py --tiny`` run: a genuine
:class:`~diffusers.WanImageToVideoPipeline` (two :class:`~diffusers.WanTransformer3DModel`
experts switched at ``boundary_ratio`` 0.9, an :class:`~diffusers.AutoencoderKLWan`, a
:class:`~transformers.UMT5EncoderModel` and a fast tokenizer), so every line of the engine (prompt
encoding, the VAE, expert switching, the 4-step schedule, LoRA loading and fusing, cancellation)
runs exactly as on the GPU, only on models small enough for a CPU: a 5-frame 128x128 clip takes
a fraction of a second.

Nothing is downloaded: the tokenizer is a word-level vocabulary built with ``tokenizers``, and the
weights are drawn from a fixed seed (under :func:`torch.random.fork_rng`, so building one does not
disturb anyone else's random stream). The same seed always gives the same weights, hence the same
pixels for the same request.

:func:`make_lightx2v_lora` writes a synthetic LoRA file in the key format of the LightX2V
Wan2.2 4-step LoRAs (``diffusion_model.blocks.N.self_attn.q.lora_down.weight`` /
``lora_up.weight`` / ``alpha``), which diffusers recognises and converts
(``_convert_non_diffusers_wan_lora_to_diffusers``), so the tests load LoRAs through the same path
as the real files.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from videokit.worker.wan import BOUNDARY_RATIO, make_lightning_scheduler

# diffusers' and transformers' annotations do not hold up under mypy --strict (lazy modules,
# dummy objects, unannotated constructors), so their classes are handled as Any here.
_diffusers: Any = importlib.import_module("diffusers")
_transformers: Any = importlib.import_module("transformers")

__all__ = [
    "TINY_TEXT_ENCODER_CONFIG",
    "TINY_TI2V_TRANSFORMER_CONFIG",
    "TINY_TI2V_VAE_CONFIG",
    "TINY_TRANSFORMER_CONFIG",
    "TINY_VAE_CONFIG",
    "TINY_VOCABULARY",
    "build_random_pipeline",
    "build_tiny_pipeline",
    "build_tiny_ti2v_pipeline",
    "build_tokenizer",
    "lightx2v_targets",
    "make_lightx2v_lora",
]

#: The word-level vocabulary of the tiny tokenizer (after the special tokens). Any other word is
#: ``<unk>``: the random text encoder does not care what the words mean, only that prompts map to
#: ids deterministically.
TINY_VOCABULARY: tuple[str, ...] = (
    *("a", "an", "the", "and", "with", "of", "in", "on", "to", "at", "slowly", "quickly"),
    *("gently", "camera", "pans", "tilts", "zooms", "push", "left", "right", "up", "down"),
    *("cat", "dog", "knight", "sword", "swings", "runs", "walks", "turns", "looks", "smiles"),
    *("waves", "wind", "hair", "water", "light", "sky", "city", "forest", "night", "day"),
    *("person", "man", "woman", "child", "red", "blue"),
)

# Special tokens first, at the ids UMT5's config expects (pad 0, eos 1), as in the real tokenizer.
_SPECIALS = ("<pad>", "</s>", "<unk>")

#: UMT5 text encoder: 2 layers of width 32 (the real one: 24 layers of 4096, ~5.7 B parameters).
TINY_TEXT_ENCODER_CONFIG: Mapping[str, Any] = {
    "vocab_size": 128,
    "d_model": 32,
    "d_kv": 8,
    "d_ff": 64,
    "num_layers": 2,
    "num_heads": 4,
    "relative_attention_num_buckets": 8,
    "relative_attention_max_distance": 32,
    "feed_forward_proj": "gated-gelu",
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
}

#: One expert: the A14B I2V layout (36 input channels = 16 noise + 16 image latents + 4 mask,
#: 16 out, patch 1x2x2, RMS qk-norm, no CLIP image branch) at width 24 and depth 2.
TINY_TRANSFORMER_CONFIG: Mapping[str, Any] = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 2,
    "attention_head_dim": 12,
    "in_channels": 36,
    "out_channels": 16,
    "text_dim": 32,
    "freq_dim": 256,
    "ffn_dim": 32,
    "num_layers": 2,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "rope_max_seq_len": 32,
}

#: The Wan2.1 VAE's structure (8x spatial, 4x temporal compression, 16 latent channels) at base
#: width 3 instead of 96.
TINY_VAE_CONFIG: Mapping[str, Any] = {
    "base_dim": 3,
    "z_dim": 16,
    "dim_mult": [1, 1, 1, 1],
    "num_res_blocks": 1,
    "temperal_downsample": [False, True, True],
}

#: One TI2V-5B-shaped transformer: the A14B block layout, but noise and image latents share the
#: Wan2.2 VAE's 48 channels (TI2V conditions by replacing the first latent frame, with per-token
#: timesteps, ``expand_timesteps``), so 48 in and 48 out, no mask channels.
TINY_TI2V_TRANSFORMER_CONFIG: Mapping[str, Any] = {
    **TINY_TRANSFORMER_CONFIG,
    "in_channels": 48,
    "out_channels": 48,
}

#: The Wan2.2 VAE's structure (what TI2V-5B ships): residual blocks, 2x2 pixel patchify (12
#: channels in and out), 16x spatial and 4x temporal compression, 48 latent channels; base
#: width 8 instead of 160.
TINY_TI2V_VAE_CONFIG: Mapping[str, Any] = {
    "base_dim": 8,
    "decoder_base_dim": 8,
    "z_dim": 48,
    "dim_mult": [1, 1, 1, 1],
    "num_res_blocks": 1,
    "temperal_downsample": [False, True, True],
    "is_residual": True,
    "in_channels": 12,
    "out_channels": 12,
    "patch_size": 2,
    "scale_factor_spatial": 16,
    "scale_factor_temporal": 4,
    "latents_mean": [0.0] * 48,
    "latents_std": [1.0] * 48,
}

# LightX2V (original Wan) module names → diffusers module paths inside one transformer block.
_LIGHTX2V_MODULES: tuple[tuple[str, str], ...] = (
    *(
        (f"self_attn.{o}", f"attn1.{c}")
        for o, c in zip("qkvo", ("to_q", "to_k", "to_v", "to_out.0"), strict=True)
    ),
    *(
        (f"cross_attn.{o}", f"attn2.{c}")
        for o, c in zip("qkvo", ("to_q", "to_k", "to_v", "to_out.0"), strict=True)
    ),
    ("ffn.0", "ffn.net.0.proj"),
    ("ffn.2", "ffn.net.2"),
)


def build_tokenizer(vocabulary: tuple[str, ...] = TINY_VOCABULARY) -> Any:
    """A word-level fast tokenizer that behaves like UMT5's for the pipeline.

    Lower-cased, split on whitespace and punctuation, ``</s>`` appended (the pipeline asks for
    special tokens and counts the attention mask to find the prompt's length), ``<pad>`` = 0.
    """
    vocab = {token: index for index, token in enumerate((*_SPECIALS, *vocabulary))}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    return _transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    # Parameters are created in the target dtype directly: a 14 B expert built in fp32 first
    # would need 57 GB before it could be cast down.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _keep_in_fp32(model: torch.nn.Module) -> None:
    """Cast what a model declares in ``_keep_in_fp32_modules`` back to fp32.

    from_pretrained does this when it loads a checkpoint in bf16/fp16 (Wan keeps its timestep
    embedder, modulation tables and norms in fp32), matching each parameter's dotted name
    against the list; a model built in code must do the same to run the same mixed precision.
    """
    names = set(getattr(model, "_keep_in_fp32_modules", None) or [])
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            if names.intersection(full.split(".")):
                param.data = param.data.to(torch.float32)


def build_random_pipeline(
    *,
    transformer_config: Mapping[str, Any],
    vae_config: Mapping[str, Any],
    text_encoder_config: Mapping[str, Any],
    tokenizer: Any = None,
    two_experts: bool = True,
    expand_timesteps: bool = False,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> Any:
    """A :class:`~diffusers.WanImageToVideoPipeline` with random weights from these configs.

    Every parameter is created directly on ``device`` in ``dtype`` (the VAE in fp32, as the
    engine loads it), never materialised on the CPU first, so a full-size A14B (two 14 B experts
    and a 5.7 B text encoder) can be built straight on a GPU. Deterministic for a given ``seed``
    and device. The scheduler is the engine's 4-step lightning scheduler. ``expand_timesteps``:
    TI2V-style conditioning (one transformer, the first latent frame replaced by the image's).
    """
    target = torch.device(device)
    devices = [target.index or 0] if target.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=target.type), target:
        torch.manual_seed(seed)
        with _default_dtype(dtype):
            text_encoder = _transformers.UMT5EncoderModel(
                _transformers.UMT5Config(**text_encoder_config)
            )
            experts = [
                _diffusers.WanTransformer3DModel(**transformer_config)
                for _ in range(2 if two_experts else 1)
            ]
        # The VAE runs in fp32 in the engine (bf16 decoding bands gradients and shifts colours).
        vae = _diffusers.AutoencoderKLWan(**vae_config)
    for expert in experts:
        _keep_in_fp32(expert)
    text_encoder.eval()
    vae.eval()
    for expert in experts:
        expert.eval()
    pipe = _diffusers.WanImageToVideoPipeline(
        tokenizer=tokenizer if tokenizer is not None else build_tokenizer(),
        text_encoder=text_encoder,
        vae=vae,
        scheduler=make_lightning_scheduler(),
        transformer=experts[0],
        transformer_2=experts[1] if two_experts else None,
        boundary_ratio=BOUNDARY_RATIO if two_experts else None,
        expand_timesteps=expand_timesteps,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_pipeline(*, device: str | torch.device = "cpu", seed: int = 0) -> Any:
    """The tiny two-expert A14B-shaped pipeline (fp32, lightning scheduler, no LoRA yet)."""
    return build_random_pipeline(
        transformer_config=TINY_TRANSFORMER_CONFIG,
        vae_config=TINY_VAE_CONFIG,
        text_encoder_config=TINY_TEXT_ENCODER_CONFIG,
        device=device,
        dtype=torch.float32,
        seed=seed,
    )


def build_tiny_ti2v_pipeline(*, device: str | torch.device = "cpu", seed: int = 0) -> Any:
    """A tiny TI2V-5B-shaped pipeline: one transformer, the Wan2.2 VAE (z 48), fp32.

    Its scheduler is the real snapshot's (UniPC over flow sigmas, shift 5): TI2V-5B has no
    distillation LoRA and runs in standard mode only.
    """
    pipe = build_random_pipeline(
        transformer_config=TINY_TI2V_TRANSFORMER_CONFIG,
        vae_config=TINY_TI2V_VAE_CONFIG,
        text_encoder_config=TINY_TEXT_ENCODER_CONFIG,
        two_experts=False,
        expand_timesteps=True,
        device=device,
        dtype=torch.float32,
        seed=seed,
    )
    pipe.scheduler = _diffusers.UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0
    )
    return pipe


def lightx2v_targets(transformer: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """The linear layers a LightX2V Wan LoRA adapts, by their diffusers module path.

    Attention q/k/v/o (self and cross) and both feed-forward projections of every block: the
    modules the lightx2v key names map to in diffusers' conversion.
    """
    blocks: Any = getattr(transformer, "blocks")  # noqa: B009 (nn.Module attribute, not typed)
    targets: dict[str, torch.nn.Linear] = {}
    for index, block in enumerate(blocks):
        for _, ours in _LIGHTX2V_MODULES:
            module = block.get_submodule(ours)
            if not isinstance(module, torch.nn.Linear):
                raise TypeError(f"blocks.{index}.{ours} is {type(module).__name__}, not Linear")
            targets[f"blocks.{index}.{ours}"] = module
    return targets


def make_lightx2v_lora(
    path: str | Path,
    transformer: torch.nn.Module,
    *,
    rank: int = 4,
    alpha: float | None = None,
    scale: float = 0.05,
    seed: int = 0,
) -> Path:
    """Write a synthetic LoRA for ``transformer`` in the LightX2V Wan2.2 file format.

    Keys as in the released ``wan2.2_i2v_lightx2v_4steps_lora_v1_{high,low}_noise`` files:
    ``diffusion_model.blocks.{i}.{self_attn|cross_attn}.{q|k|v|o}`` and
    ``diffusion_model.blocks.{i}.ffn.{0|2}``, each with ``.lora_down.weight`` (rank x in),
    ``.lora_up.weight`` (out x rank) and a scalar ``.alpha`` (the delta is scaled by
    alpha / rank; ``alpha`` defaults to ``rank``). Values are normal with std ``scale``, from
    ``seed``, so a file is reproducible. Returns ``path``.
    """
    path = Path(path)
    generator = torch.Generator().manual_seed(seed)
    alpha_value = torch.tensor(float(rank if alpha is None else alpha))
    tensors: dict[str, torch.Tensor] = {}
    blocks: Any = getattr(transformer, "blocks")  # noqa: B009
    for index, block in enumerate(blocks):
        for theirs, ours in _LIGHTX2V_MODULES:
            linear = block.get_submodule(ours)
            prefix = f"diffusion_model.blocks.{index}.{theirs}"
            down = torch.randn(rank, linear.in_features, generator=generator) * scale
            up = torch.randn(linear.out_features, rank, generator=generator) * scale
            tensors[f"{prefix}.lora_down.weight"] = down.contiguous()
            tensors[f"{prefix}.lora_up.weight"] = up.contiguous()
            tensors[f"{prefix}.alpha"] = alpha_value.clone()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path
