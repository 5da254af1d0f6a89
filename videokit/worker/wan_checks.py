"""Checks on an animate request that the Wan engine runs before any pipeline work.

Each refusal is a :class:`~videokit.worker.errors.JobInputError` (not transient), raised at once
instead of after the text encoder and the VAE have run:

* :class:`WanGrid`: the sizes a pipeline can build. Width and height must be multiples of the VAE
  stride x patch size, and each axis of the patched latent grid (time too) must fit the
  transformer's rotary table of ``rope_max_seq_len`` positions: 1024 for the real models (never
  reached), 32 for the tiny one, so at most 512 px a side and 125 frames there.
* :func:`check_lightning_steps`: the 4-step LoRAs were distilled on one exact schedule.
* :func:`check_cfg_pair`: diffusers runs CFG only when ``guidance_scale`` > 1 (for both experts),
  so a ``guidance_scale_2`` > 1 next to a ``guidance_scale`` <= 1 would be logged, never applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from videokit.protocol import MIN_SIDE, is_valid_frame_count, nearest_frame_count
from videokit.worker.errors import JobInputError

__all__ = ["WanGrid", "check_cfg_pair", "check_lightning_steps"]


@dataclass(frozen=True)
class WanGrid:
    """The frame sizes and counts one loaded pipeline can render."""

    multiple: int  # width and height must be multiples of this (VAE stride x patch size)
    max_width: int
    max_height: int
    max_frames: int  # a 4k+1 count
    rope_positions: int  # the transformer's rope_max_seq_len, for the message

    @classmethod
    def of(cls, pipe: Any) -> WanGrid:
        """Read the limits from the pipeline's own configs (nothing is assumed per model)."""
        expert = pipe.transformer if pipe.transformer is not None else pipe.transformer_2
        p_t, p_h, p_w = (int(p) for p in expert.config.patch_size)
        rope = int(expert.config.rope_max_seq_len)
        spatial, temporal = int(pipe.vae_scale_factor_spatial), int(pipe.vae_scale_factor_temporal)
        # diffusers' WanRotaryPosEmbed slices rope positions [:n] per axis, n = latent // patch,
        # then views them as n rows: n > rope_max_seq_len fails there ("shape [1, 1, 52, -1]").
        latent_frames = (rope + 1) * p_t - 1  # the most whose // p_t is still <= rope
        return cls(
            multiple=spatial * p_h,
            max_width=rope * p_w * spatial,
            max_height=rope * p_h * spatial,
            max_frames=(latent_frames - 1) * temporal + 1,
            rope_positions=rope,
        )

    def check(self, model: str, width: int, height: int, frames: int) -> None:
        """Refuse what the pipeline would crop, round or fail on deep inside the transformer."""
        # The protocol enforces 4k+1 and multiples of 16 too; re-checked because a model with a
        # coarser grid (ti2v-5b: 32) would otherwise be silently cropped by the pipeline.
        if not is_valid_frame_count(frames):
            raise JobInputError(
                f"frames must be 4k+1; {frames} is not — use {nearest_frame_count(frames)}"
            )
        for name, value in (("width", width), ("height", height)):
            if value % self.multiple:
                raise JobInputError(
                    f"{name}: {model} needs a multiple of {self.multiple}, got {value}"
                )
        if width > self.max_width or height > self.max_height:
            # The nearest renderable size keeps the aspect ratio, rounded down to the grid (but
            # not below the protocol's smallest side, which the client would refuse).
            scale = min(self.max_width / width, self.max_height / height)
            smallest = -(-MIN_SIDE // self.multiple) * self.multiple
            near_w, near_h = (
                max(smallest, int(side * scale) // self.multiple * self.multiple)
                for side in (width, height)
            )
            raise JobInputError(
                f"{width}x{height}: {model} renders at most {self.max_width}x{self.max_height} "
                f"(its transformer has {self.rope_positions} rotary positions per axis); the "
                f"nearest size at this aspect ratio is {near_w}x{near_h}",
                hint=f"send {near_w}x{near_h}, or any multiple of {self.multiple} up to "
                f"{self.max_width}x{self.max_height}",
            )
        if frames > self.max_frames:
            raise JobInputError(
                f"frames: {model} renders at most {self.max_frames} frames (its transformer has "
                f"{self.rope_positions} rotary positions in time), got {frames}",
                hint=f"send frames {self.max_frames} or fewer",
            )


def check_lightning_steps(steps: int, *, distilled_for: int) -> None:
    """Refuse a step count the Lightning LoRAs were not distilled for.

    Any other count would run on sigmas ``1 - k/steps`` the LoRAs never saw: no error, just a
    worse clip under the same model name, so it is refused rather than run.
    """
    if steps != distilled_for:
        raise JobInputError(
            f"steps: the Lightning engine runs exactly {distilled_for} steps (its LoRAs are "
            f"distilled for that one schedule), got {steps}",
            hint=f"send steps {distilled_for} (the protocol's default), or deploy the standard "
            "mode (VIDEOKIT_WAN_MODE=standard) for other step counts",
        )


def check_cfg_pair(guidance_scale: float, guidance_scale_2: float | None) -> None:
    """Refuse a two-expert guidance pair that diffusers would silently run without CFG.

    ``WanImageToVideoPipeline.do_classifier_free_guidance`` is ``guidance_scale > 1`` alone: at
    or below 1 no unconditional pass runs for either expert, so ``guidance_scale_2`` is unused.
    """
    if guidance_scale_2 is not None and guidance_scale <= 1.0 < guidance_scale_2:
        raise JobInputError(
            f"guidance_scale {guidance_scale} with guidance_scale_2 {guidance_scale_2}: the "
            "pipeline runs classifier-free guidance only when guidance_scale is above 1, and "
            "then on both experts (guidance_scale on the high-noise one, guidance_scale_2 on the "
            "low-noise one); with guidance_scale at or below 1 neither expert gets CFG and "
            "guidance_scale_2 would be ignored",
            hint="for CFG send guidance_scale above 1 (e.g. 3.5, with guidance_scale_2 3.5); "
            "for none, send guidance_scale_2 1 or leave it out",
        )
