"""LightX2V's 4-step distillation for Wan2.2: its exact schedule and its LoRAs, fused.

The LoRAs were distilled on Euler with sigmas ``1 - k/steps`` shifted by 5, which for 4 steps
gives timesteps [1000, 937.5, 833.3, 625]; a stock ``FlowMatchEulerDiscreteScheduler(shift=5)``
asked for 4 steps gives [1000, 909.7, 717.3, 24.4] instead, so :class:`LightningScheduler`
supplies the sigmas itself. The LoRAs are fused into both experts and their layers dropped.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

from videokit.errors import ConfigError

__all__ = [
    "LIGHTNING_SHIFT",
    "LIGHTNING_STEPS",
    "LightningScheduler",
    "apply_lightning",
    "lightning_sigmas",
    "make_lightning_scheduler",
]

# diffusers' annotations do not hold up under mypy --strict (lazy modules, unannotated
# constructors), so its classes are handled as Any here.
_diffusers: Any = importlib.import_module("diffusers")

#: The flow shift of LightX2V's 4-step schedule (and of Wan2.2 I2V's reference sampler).
LIGHTNING_SHIFT = 5.0
#: The step count the LightX2V LoRAs were distilled for; also the protocol's default.
LIGHTNING_STEPS = 4


# -- scheduling ------------------------------------------------------------------------------------


def lightning_sigmas(steps: int) -> list[float]:
    """LightX2V's unshifted sigmas for ``steps`` Euler steps: ``1 - k/steps``.

    For 4 steps: [1, .75, .5, .25], i.e. LightX2V's denoising step list [1000, 750, 500, 250]
    before the shift. The scheduler applies shift 5 and appends the final 0.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    return [1.0 - k / steps for k in range(steps)]


class LightningScheduler(_diffusers.FlowMatchEulerDiscreteScheduler):  # type: ignore[misc]
    """Flow-match Euler that always uses LightX2V's sigmas for the step count it is given.

    ``WanImageToVideoPipeline`` calls ``set_timesteps(num_inference_steps, device=...)`` and has
    no way to pass sigmas, so this subclass supplies them; with shift 5 and 4 steps the
    timesteps are [1000, 937.5, 833.3, 625]. Explicit ``sigmas``/``timesteps`` still win.
    """

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        sigmas: list[float] | None = None,
        mu: float | None = None,
        timesteps: list[float] | None = None,
    ) -> None:
        if sigmas is None and timesteps is None and num_inference_steps is not None:
            sigmas = lightning_sigmas(num_inference_steps)
        super().set_timesteps(
            num_inference_steps=num_inference_steps,
            device=device,
            sigmas=sigmas,
            mu=mu,
            timesteps=timesteps,
        )


def make_lightning_scheduler() -> LightningScheduler:
    """The lightning mode's scheduler: Euler, shift 5, 1000 training steps, explicit sigmas."""
    return LightningScheduler(num_train_timesteps=1000, shift=LIGHTNING_SHIFT)


# -- LoRA ------------------------------------------------------------------------------------------


def apply_lightning(pipe: Any, high_noise: Path, low_noise: Path | None) -> dict[str, int]:
    """Load the LightX2V LoRAs into the experts, check every key landed, fuse, drop the layers.

    ``high_noise`` goes into ``transformer``, ``low_noise`` into ``transformer_2``. The files are
    read once and converted by diffusers (LightX2V/ComfyUI key names are recognised); each
    converted key must name a module of its expert, else ConfigError (a LoRA for another
    architecture would otherwise load partly and silently). Sets the lightning scheduler.
    Returns the number of adapted modules per expert.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    plan: list[tuple[str, Path, str]] = [("transformer", high_noise, "lightx2v_high_noise")]
    if low_noise is not None:
        plan.append(("transformer_2", low_noise, "lightx2v_low_noise"))
    adapted: dict[str, int] = {}
    for component, path, adapter in plan:
        state = pipe.lora_state_dict(str(path))
        prefix = "transformer."
        targets = {key.removeprefix(prefix).split(".lora_", 1)[0] for key in state}
        if not targets:
            raise ConfigError(f"LoRA file {path} holds no LoRA weights")
        pipe.load_lora_weights(
            state, adapter_name=adapter, load_into_transformer_2=component == "transformer_2"
        )
        model = getattr(pipe, component)
        loaded = {
            name for name, module in model.named_modules() if isinstance(module, BaseTunerLayer)
        }
        unused = sorted(targets - loaded)
        if unused:
            pipe.unload_lora_weights()
            shown = ", ".join(unused[:5]) + (
                f" and {len(unused) - 5} more" if len(unused) > 5 else ""
            )
            raise ConfigError(
                f"LoRA file {path}: {len(unused)} of its {len(targets)} modules do not exist in "
                f"{component} ({shown})",
                hint="is it a Wan2.2 I2V A14B LoRA, and the high/low-noise file in its place?",
            )
        adapted[component] = len(loaded)
    components = [component for component, _, _ in plan]
    pipe.fuse_lora(components=components, lora_scale=1.0)
    # Fused weights stay; the LoRA layers go (they would cost memory and a wrapper per call).
    pipe.unload_lora_weights()
    pipe.scheduler = make_lightning_scheduler()
    return adapted
