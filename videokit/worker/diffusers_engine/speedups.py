"""The speed options applied to a loaded pipeline: attention kernel, regional compilation, FP8.

Applied in that order after any LoRA is fused (a quantised weight cannot take a LoRA delta).
Each returns what it did for the load log; an attention kernel that cannot run here falls back
to PyTorch's own, compile and FP8 refuse to load with the reason instead (a worker configured
for them should not quietly run without).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from videokit.errors import ConfigError
from videokit.worker.diffusers_engine.options import EngineOptions

__all__ = ["ATTENTION_BACKENDS", "AttentionChoice", "apply_fp8", "compile_blocks", "set_attention"]

#: The option's names → diffusers' dispatcher names (``diffusers.AttentionBackendName``).
ATTENTION_BACKENDS: dict[str, str] = {
    "native": "native",
    "cudnn": "_native_cudnn",
    "flash3": "_flash_3",
    "sage": "sage",
}
# What each needs beyond diffusers: (python module, compute capability, what to install).
_REQUIREMENTS: dict[str, tuple[str | None, tuple[int, int], str]] = {
    "cudnn": (None, (8, 0), "PyTorch's cuDNN attention (Ampere or newer)"),
    "flash3": ("flash_attn_interface", (9, 0), "FlashAttention-3 (Hopper; flash-attn's hopper/)"),
    "sage": ("sageattention", (8, 0), "SageAttention (pip install sageattention)"),
}


@dataclass(frozen=True)
class AttentionChoice:
    """The kernel asked for, the one in use, and why they differ (None when they do not)."""

    requested: str
    used: str
    reason: str | None = None

    def log(self) -> dict[str, str]:
        out = {"requested": self.requested, "used": self.used}
        if self.reason:
            out["fallback"] = self.reason
        return out


def _capability(device: str) -> tuple[int, int] | None:
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(torch.device(device))
    return int(major), int(minor)


def _unavailable(name: str, device: str) -> str | None:
    """Why the kernel ``name`` cannot run on ``device`` here, or None if it can."""
    if name == "native":
        return None
    module, needed, what = _REQUIREMENTS[name]
    capability = _capability(device)
    if capability is None:
        return f"{what} needs a CUDA device; this engine runs on {device}"
    if capability < needed:
        return (
            f"{what} needs compute capability {needed[0]}.{needed[1]}+; this GPU has "
            f"{capability[0]}.{capability[1]}"
        )
    if module is not None and importlib.util.find_spec(module) is None:
        return f"{what} is not installed in this worker ({module} is missing)"
    return None


def set_attention(models: Sequence[Any], requested: str, device: str) -> AttentionChoice:
    """Route every attention layer of ``models`` to the requested kernel, or keep the native one.

    diffusers checks a backend's package when it is set; the device and compute capability are
    checked here first, so a cuDNN request on a CPU (or an Ampere card asked for FA3) falls back
    with a reason rather than failing in the first job.
    """
    reason = _unavailable(requested, device)
    if reason is None and requested != "native":
        try:
            with _quiet_diffusers():
                for model in models:
                    model.set_attention_backend(ATTENTION_BACKENDS[requested])
        except (ImportError, RuntimeError, ValueError) as exc:
            reason = f"diffusers refused {ATTENTION_BACKENDS[requested]}: {exc}"
    if reason is not None:
        reset_attention(models)
        return AttentionChoice(requested, "native", reason)
    return AttentionChoice(requested, requested)


def reset_attention(models: Sequence[Any]) -> None:
    """Back to PyTorch's SDPA (after a kernel failed in the warm-up step)."""
    with _quiet_diffusers():
        for model in models:
            model.set_attention_backend("native")


def compile_blocks(models: Sequence[Any], options: EngineOptions) -> list[str]:
    """``torch.compile`` each model's repeated transformer blocks (regional compilation).

    Compiles one block graph and reuses it for the 40 blocks of an expert (seconds, against
    minutes for the whole model). ``dynamic=True``: one graph for every frame size a worker is
    sent, instead of a recompile per size. The compile itself happens in the first call, which
    is the warm-up step at load. Returns the compiled block classes.
    """
    if options.compile == "off":
        return []
    import torch

    if not hasattr(torch, "compile"):
        raise ConfigError(
            f"{options.source('compile')}=blocks needs torch.compile (torch {torch.__version__})"
        )
    compiled: list[str] = []
    for model in models:
        try:
            model.compile_repeated_blocks(fullgraph=True, dynamic=True)
        except ValueError as exc:  # a model class without _repeated_blocks
            raise ConfigError(
                f"{options.source('compile')}=blocks: {type(model).__name__} cannot be compiled "
                f"by regions ({exc})",
                hint="set VIDEOKIT_COMPILE=off",
            ) from None
        compiled += list(getattr(model, "_repeated_blocks", ()))
    return sorted(set(compiled))


def apply_fp8(models: Sequence[Any], options: EngineOptions, device: str) -> dict[str, Any] | None:
    """Quantise the linear layers of ``models`` to float8 e4m3 with torchao; None when off.

    ``weights``: weight-only (each weight stored in FP8 with a per-row scale, dequantised in the
    matmul): half the memory of bf16. ``dynamic``: activations are quantised per token too, so
    the matmuls themselves run in FP8 (compute capability 8.9+: Ada and Hopper).
    """
    if options.fp8 == "off":
        return None
    what = f"{options.source('fp8')}={options.fp8}"
    if importlib.util.find_spec("torchao") is None:
        raise ConfigError(
            f"{what}: FP8 weights need torchao, which is not installed in this worker",
            hint="pip install 'videokit[gpu,fp8]' (the worker images do), or set VIDEOKIT_FP8=off",
        )
    if options.fp8 == "dynamic":
        capability = _capability(device)
        if capability is None or capability < (8, 9):
            found = "no CUDA device" if capability is None else f"{capability[0]}.{capability[1]}"
            raise ConfigError(
                f"{what}: FP8 matmuls need a GPU of compute capability 8.9+ (Ada, Hopper); "
                f"this engine has {found} (device {device})",
                hint="use VIDEOKIT_FP8=weights (weight-only, any device torchao runs on)",
            )
    quantization: Any = importlib.import_module("torchao.quantization")
    config = (
        quantization.Float8DynamicActivationFloat8WeightConfig()
        if options.fp8 == "dynamic"
        else quantization.Float8WeightOnlyConfig()
    )
    layers = 0
    for model in models:
        # A LoRA's own small layers stay in the model dtype: the delta they add is what the
        # distillation learned, and the base weight they wrap is quantised anyway.
        quantization.quantize_(model, config, filter_fn=_quantisable)
        layers += sum(1 for m in model.modules() if _is_fp8_linear(m))
    return {"mode": options.fp8, "layers": layers}


def _quantisable(module: Any, name: str) -> bool:
    import torch

    return isinstance(module, torch.nn.Linear) and "lora_" not in name


def _is_fp8_linear(module: Any) -> bool:
    import torch

    weight = getattr(module, "weight", None)
    return isinstance(module, torch.nn.Linear) and type(weight).__name__.startswith("Float8")


class _quiet_diffusers:
    """diffusers warns that attention backends are experimental on every call; a worker's
    stderr is its JSON log, so that line is held back while the backend is set."""

    def __enter__(self) -> None:
        self._logger = logging.getLogger("diffusers.models.modeling_utils")
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        self._logger.setLevel(self._level)
