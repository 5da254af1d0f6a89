"""Qwen-Image-Edit-2509's pipeline with tiny random weights, built in code, offline, deterministic.

The ``tiny`` engine and the tests run the **real** diffusers ``QwenImageEditPlusPipeline`` and the
real component classes (``Qwen2_5_VLForConditionalGeneration`` with its vision tower,
``Qwen2Tokenizer``, ``Qwen2VLProcessor``, ``AutoencoderKLQwenImage``,
``QwenImageTransformer2DModel``, ``FlowMatchEulerDiscreteScheduler``), only with configs a few
thousand times smaller than the real ones, so the GPU worker's whole code path (prompt template,
vision tokens, VAE latents, LoRA loading, scheduler, CFG, step callbacks) runs on a CPU in
seconds. Nothing is downloaded: every config is written here, and weights come from a seeded RNG.

Four things differ from a ``from_pretrained`` load, each for a reason:

* **Tokenizer.** A real ``Qwen2Tokenizer`` whose vocabulary is the 256 byte-level symbols and no
  merges (one token per byte), plus the special tokens the pipeline's prompt template uses
  (``<|im_start|>``, ``<|im_end|>``, ``<|vision_start|>``, ``<|image_pad|>``, ...). The text
  encoder's config takes its token ids *from the tokenizer* (``image_token_id`` must be the id
  the processor writes for ``<|image_pad|>``, or the vision features land nowhere).
  The pipeline drops the first 64 hidden states (``prompt_template_encode_start_idx``): the system
  prompt's length in the real Qwen tokenizer. The system prompt's words are therefore added as
  whole tokens, so that the prefix is exactly 64 tokens here too and what reaches the transformer
  is, as in the real model, the user turn only (checked when the tokenizer is built). Those words
  also match inside prompts; other text stays one token per byte.
* **Processor.** transformers 5.23's ``Qwen2VLProcessor`` insists on its three sub-processors,
  and its video processor needs torchvision, which is not installed here (and need not be on a
  worker).
  :class:`ImageOnlyQwen2VLProcessor` is the same class minus the ``video_processor`` argument
  (transformers derives a processor's sub-processors from its ``__init__`` signature); the
  pipeline never passes videos. :mod:`videokit.worker.qwen` uses it for real weights too.
* **Image sizes.** The pipeline resizes every input image to ``VAE_IMAGE_SIZE`` (1024², for the
  VAE) and ``CONDITION_IMAGE_SIZE`` (384², for the vision tower), module globals read at call
  time. At those sizes even a tiny VAE takes minutes on a CPU (148 s per edit measured), so
  :func:`shrunk_image_sizes` lowers them (to 128² and 64²) for the duration of a call: a
  128×128, 8-step tiny edit then takes ~0.2 s on one CPU thread. It swaps module-global state:
  never run a real and a tiny pipeline in one process at once.
* **LoRA.** :func:`make_lightning_lora` writes a random LoRA in the Lightning files' own key
  format, so the tiny engine loads it through the same diffusers conversion the real file takes.

:func:`write_model_dir` saves a tiny pipeline in the published repo's folder layout; the tiny
engine loads it from there with the real loader (see :mod:`videokit.worker.qwen`).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import Qwen2VLProcessor

__all__ = [
    "CONDITION_IMAGE_SIZE",
    "LIGHTNING_LORA_MODULES",
    "QWEN_SCHEDULER_CONFIG",
    "TINY_VERSION",
    "VAE_IMAGE_SIZE",
    "ImageOnlyQwen2VLProcessor",
    "build_pipeline",
    "build_tokenizer",
    "lightning_lora_state_dict",
    "make_lightning_lora",
    "make_processor",
    "shrunk_image_sizes",
    "tiny_components",
    "write_model_dir",
]

#: Bump when anything here changes the tiny pipeline's pixels: it is part of the engine identity.
TINY_VERSION = 1

#: The tiny pipeline's image sizes (pixels): the VAE sees inputs at 128², the vision tower at 64².
VAE_IMAGE_SIZE = 128 * 128
CONDITION_IMAGE_SIZE = 64 * 64

#: The scheduler config Qwen-Image-Edit(-2509/-2511) ships in ``scheduler/scheduler_config.json``:
#: resolution-dependent exponential time shift (mu from the latent token count, 0.5 .. 0.9), and
#: the schedule stretched to end at sigma 0.02.
QWEN_SCHEDULER_CONFIG: Mapping[str, Any] = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "invert_sigmas": False,
    "max_image_seq_len": 8192,
    "max_shift": 0.9,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.02,
    "stochastic_sampling": False,
    "time_shift_type": "exponential",
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}

#: The linear layers each transformer block's Lightning LoRA adapts (12 per block: 720 pairs for
#: the real 60 blocks, the count the published files hold), named as in the files' keys.
LIGHTNING_LORA_MODULES: tuple[str, ...] = (
    "attn.to_q",
    "attn.to_k",
    "attn.to_v",
    "attn.to_out.0",
    "attn.add_q_proj",
    "attn.add_k_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
    "img_mlp.net.0.proj",
    "img_mlp.net.2",
    "txt_mlp.net.0.proj",
    "txt_mlp.net.2",
)

# The special tokens of Qwen2.5-VL that the edit pipeline's prompt template and processor use.
_SPECIAL_TOKENS = (
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
_WORDS = re.compile(r" ?[A-Za-z]+|'s|[^\sA-Za-z]|\s+")

_SEED = 0
_LATENT_CHANNELS = 4

_SIZES_LOCK = threading.RLock()


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    """``Qwen2VLProcessor`` for images only: no ``video_processor`` (which needs torchvision).

    transformers derives a processor's sub-processors from its ``__init__`` parameters, so leaving
    ``video_processor`` out of the signature is all it takes: the parent's constructor receives
    ``None`` for it and drops it, and ``__call__`` only touches videos when there is a video
    processor. Text and images are processed by the unchanged parent code.
    """

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            image_processor, tokenizer, None, chat_template=chat_template, **kwargs
        )


def make_processor(image_processor: Any, tokenizer: Any) -> ImageOnlyQwen2VLProcessor:
    """An image-only ``Qwen2VLProcessor`` from its two parts (see the module docstring)."""
    return ImageOnlyQwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer)


def _diffusers() -> Any:
    # diffusers' classes are partly typed (untyped constructors, attributes set by
    # register_modules): they are used as Any here rather than with an ignore on every line.
    import diffusers

    return diffusers


# -- tokenizer -------------------------------------------------------------------------------------


def _pipeline_template() -> tuple[str, int]:
    """The edit pipeline's prompt template and how many leading tokens it drops (read, not copied).

    Both are set in ``QwenImageEditPlusPipeline.__init__``; every component may be None there.
    """
    probe = _diffusers().QwenImageEditPlusPipeline(None, None, None, None, None, None)
    return str(probe.prompt_template_encode), int(probe.prompt_template_encode_start_idx)


def build_tokenizer() -> Any:
    """A byte-level ``Qwen2Tokenizer`` with the pipeline's special tokens and a 64-token prefix."""
    from tokenizers import AddedToken, pre_tokenizers
    from transformers import Qwen2Tokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Qwen2Tokenizer(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[])
    tokenizer.add_tokens(
        [AddedToken(token, special=True, normalized=False) for token in _SPECIAL_TOKENS],
        special_tokens=True,
    )
    template, drop = _pipeline_template()
    prefix = template.split("{}", 1)[0]
    pieces = _prefix_pieces(prefix, drop)
    tokenizer.add_tokens([AddedToken(p, normalized=False) for p in dict.fromkeys(pieces)])
    count = len(tokenizer(prefix)["input_ids"])
    if count != drop:
        raise RuntimeError(
            f"the tiny tokenizer splits the prompt template's prefix into {count} tokens, not "
            f"{drop}: the pipeline would drop the wrong hidden states"
        )
    return tokenizer


def _prefix_pieces(prefix: str, count: int) -> list[str]:
    """Split the system prefix into word-like pieces so that it makes exactly ``count`` tokens."""
    specials = re.compile("|".join(re.escape(t) for t in _SPECIAL_TOKENS))
    segments = [s for s in specials.split(prefix) if s]
    target = count - len(specials.findall(prefix))
    # (segment, text): neighbours merge only within a segment, as a special token separates them.
    pieces = [(k, w) for k, segment in enumerate(segments) for w in _WORDS.findall(segment)]
    while len(pieces) > target:
        mergeable = [i for i in range(len(pieces) - 1) if pieces[i][0] == pieces[i + 1][0]]
        i = min(mergeable, key=lambda j: len(pieces[j][1]) + len(pieces[j + 1][1]))
        pieces[i : i + 2] = [(pieces[i][0], pieces[i][1] + pieces[i + 1][1])]
    while len(pieces) < target:
        i = max(range(len(pieces)), key=lambda j: len(pieces[j][1]))
        k, word = pieces[i]
        pieces[i : i + 1] = [(k, word[: len(word) // 2]), (k, word[len(word) // 2 :])]
    return [text for _, text in pieces]


# -- components ------------------------------------------------------------------------------------


def tiny_components(*, seed: int = _SEED) -> dict[str, Any]:
    """The six components of a tiny ``QwenImageEditPlusPipeline`` (fp32, on the CPU)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    diffusers = _diffusers()
    tokenizer = build_tokenizer()

    def token_id(token: str) -> int:
        return int(tokenizer.convert_tokens_to_ids(token))

    text_hidden = 32
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": 8 * math.ceil(len(tokenizer) / 8),
            "hidden_size": text_hidden,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-6,
            # head_dim 16: 8 rotary frequencies over (time, height, width), as [16, 24, 24] of 64
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1e6,
                "mrope_section": [2, 3, 3],
            },
            "bos_token_id": token_id("<|endoftext|>"),
            "eos_token_id": token_id("<|im_end|>"),
            "pad_token_id": token_id("<|endoftext|>"),
        },
        vision_config={
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_heads": 2,
            "out_hidden_size": text_hidden,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [1],
        },
        image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"),
    )
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
        min_pixels=56 * 56,
        max_pixels=28 * 28 * 16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder: Any = Qwen2_5_VLForConditionalGeneration(config)
        text_encoder.eval()
        torch.manual_seed(seed + 1)
        transformer = diffusers.QwenImageTransformer2DModel(
            patch_size=2,
            in_channels=4 * _LATENT_CHANNELS,
            out_channels=_LATENT_CHANNELS,
            num_layers=2,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=text_hidden,
            axes_dims_rope=(4, 6, 6),
        ).eval()
        torch.manual_seed(seed + 2)
        vae = diffusers.AutoencoderKLQwenImage(
            base_dim=8,
            z_dim=_LATENT_CHANNELS,
            dim_mult=[1, 2, 2, 2],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
            latents_mean=[0.0] * _LATENT_CHANNELS,
            latents_std=[1.0] * _LATENT_CHANNELS,
        ).eval()
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_config(dict(QWEN_SCHEDULER_CONFIG))
    return {
        "scheduler": scheduler,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "processor": make_processor(image_processor, tokenizer),
        "transformer": transformer,
    }


def build_pipeline(*, seed: int = _SEED) -> Any:
    """The real ``QwenImageEditPlusPipeline`` on tiny random weights (fp32, CPU, no progress bar).

    Call it inside :func:`shrunk_image_sizes`, or it resizes every input to 1024² for the VAE.
    """
    pipe = _diffusers().QwenImageEditPlusPipeline(**tiny_components(seed=seed))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@contextlib.contextmanager
def shrunk_image_sizes(
    vae_image_size: int = VAE_IMAGE_SIZE, condition_image_size: int = CONDITION_IMAGE_SIZE
) -> Iterator[None]:
    """Lower the edit pipeline's input resize targets (pixels) while the block runs.

    ``VAE_IMAGE_SIZE`` and ``CONDITION_IMAGE_SIZE`` are globals of diffusers'
    ``pipeline_qwenimage_edit_plus`` module, read on every call. They are swapped under a lock
    (concurrent tiny calls nest safely: the outermost restores) and restored on exit, whatever
    happens. Any pipeline of that module running meanwhile in this process sees the tiny values,
    so a tiny and a real engine must never share a process.
    """
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as module

    with _SIZES_LOCK:
        saved = (module.VAE_IMAGE_SIZE, module.CONDITION_IMAGE_SIZE)
        module.VAE_IMAGE_SIZE = vae_image_size
        module.CONDITION_IMAGE_SIZE = condition_image_size
        try:
            yield
        finally:
            module.VAE_IMAGE_SIZE, module.CONDITION_IMAGE_SIZE = saved


# -- LoRA ------------------------------------------------------------------------------------------


def lightning_lora_state_dict(
    transformer: Any,
    *,
    rank: int = 4,
    alpha: float = 2.0,
    seed: int = 0,
    scale: float = 0.05,
    dtype: torch.dtype = torch.bfloat16,
) -> dict[str, torch.Tensor]:
    """A random LoRA for ``transformer`` in the Qwen-Image-Lightning files' key format.

    The published files (``lightx2v/Qwen-Image-Lightning``) hold, for every block ``i`` and each
    of :data:`LIGHTNING_LORA_MODULES`, ``transformer_blocks.{i}.{module}.lora_down.weight``
    (rank × in), ``.lora_up.weight`` (out × rank) and a scalar ``.alpha``, with no
    ``transformer.`` prefix: diffusers recognises that format by its ``.alpha`` keys and converts
    it (alpha/rank folded into the weights) before PEFT loads it. The real files are rank 64
    (~0.85 GB in bf16 for the 60 blocks). Both halves here are random and non-zero, so the LoRA
    visibly changes the transformer's output. Tensors are made on the transformer's device.
    """
    device = next(transformer.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for i, block in enumerate(transformer.transformer_blocks):
        for name in LIGHTNING_LORA_MODULES:
            out_features, in_features = block.get_submodule(name).weight.shape
            key = f"transformer_blocks.{i}.{name}"
            down = torch.randn(rank, in_features, generator=generator, device=device) * scale
            up = torch.randn(out_features, rank, generator=generator, device=device) * scale
            tensors[f"{key}.lora_down.weight"] = down.to(dtype)
            tensors[f"{key}.lora_up.weight"] = up.to(dtype)
            tensors[f"{key}.alpha"] = torch.tensor(alpha, dtype=dtype, device=device)
    return tensors


def make_lightning_lora(
    path: str | Path,
    transformer: Any,
    *,
    rank: int = 4,
    alpha: float = 2.0,
    seed: int = 0,
) -> Path:
    """Write :func:`lightning_lora_state_dict` to ``path`` (safetensors), as the real files are."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = lightning_lora_state_dict(transformer, rank=rank, alpha=alpha, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: value.cpu() for key, value in tensors.items()}, str(path))
    return path


# -- a model folder on disk ------------------------------------------------------------------------


def write_model_dir(pipe: Any, path: str | Path, *, lora_files: Sequence[str] = ()) -> Path:
    """Save ``pipe`` as a diffusers model folder laid out like the published Qwen-Image-Edit repos.

    ``model_index.json`` names the stock classes (``Qwen2VLProcessor``, not the image-only one),
    ``processor/`` holds the image processor config and the tokenizer, as in the real repo. Each
    name in ``lora_files`` becomes a random Lightning-format LoRA under ``<path>/../loras``. For
    tests of the loader that real weights go through.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    pipe.scheduler.save_pretrained(path / "scheduler")
    pipe.vae.save_pretrained(path / "vae")
    pipe.transformer.save_pretrained(path / "transformer")
    pipe.text_encoder.save_pretrained(path / "text_encoder")
    pipe.tokenizer.save_pretrained(path / "tokenizer")
    pipe.processor.image_processor.save_pretrained(path / "processor")
    pipe.processor.tokenizer.save_pretrained(path / "processor")
    index = {
        "_class_name": "QwenImageEditPlusPipeline",
        "_diffusers_version": _diffusers().__version__,
        "processor": ["transformers", "Qwen2VLProcessor"],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "Qwen2_5_VLForConditionalGeneration"],
        "tokenizer": ["transformers", "Qwen2Tokenizer"],
        "transformer": ["diffusers", "QwenImageTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKLQwenImage"],
    }
    (path / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    for i, name in enumerate(lora_files):
        make_lightning_lora(path.parent / "loras" / name, pipe.transformer, seed=100 + i)
    return path
