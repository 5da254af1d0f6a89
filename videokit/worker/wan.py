"""The Wan2.2 image-to-video engine: diffusers' ``WanImageToVideoPipeline`` behind the worker.

    engine = load_engine(tiny=False)          # reads the worker environment, loads once
    result = await engine.animate(request, ctx)

**Models** (``VIDEOKIT_WAN_MODEL``):

* ``a14b`` (default): Wan2.2-I2V-A14B, two 14 B experts; ``transformer`` (high noise) denoises
  while the timestep is >= ``boundary_ratio`` x 1000 = 900, ``transformer_2`` (low noise) after.
  No CLIP image encoder (Wan2.2 conditions on the VAE latents of the first frame only).
* ``ti2v-5b``: Wan2.2-TI2V-5B, one transformer, ``expand_timesteps=True``, its own 16x VAE (so
  width and height must be multiples of 32). No 4-step LoRA is known for it: standard mode only.

**Modes** (``VIDEOKIT_WAN_MODE``):

* ``lightning`` (default for a14b): the LightX2V 4-step distillation LoRAs, the high-noise one
  loaded into ``transformer`` and the low-noise one into ``transformer_2``, fused into the
  weights (then the LoRA layers are dropped: no per-step LoRA cost, ~1 GB less memory). Euler
  with **explicit** sigmas ``1 - k/steps`` shifted by 5: for 4 steps sigmas [1, .75, .5, .25]
  → timesteps [1000, 937.5, 833.3, 625], exactly LightX2V's schedule (steps 1-2 on the
  high-noise expert, 3-4 on the low-noise one). A stock ``FlowMatchEulerDiscreteScheduler
  (shift=5)`` asked for 4 steps gives [1000, 909.7, 717.3, 24.4] instead (it spaces timesteps
  between its *shifted* extremes and shifts again), so :class:`LightningScheduler` supplies the
  sigmas itself; the pipeline only ever passes a step count. Guidance is 1.0 for both experts
  whatever the request says: the LoRAs were distilled without CFG, and CFG would double the cost
  and burn the picture. Any ``request.steps`` but 4 is refused (:mod:`.wan_checks`).
* ``standard``: the model's own scheduler from its folder and classifier-free guidance. The
  protocol's defaults are the lightning ones (``steps`` 4, ``guidance_scale`` 1.0, no
  ``guidance_scale_2``: the :class:`~videokit.protocol.AnimateRequest` field defaults), which
  would ruin an undistilled model. So a request whose steps and guidance are *exactly* those
  defaults (the client did not choose them) runs the model's reference settings instead: 40
  steps and guidance 3.5/3.5 for a14b, 50 steps and 5.0 for ti2v-5b, and its negative prompt,
  or, when it has none, Wan's own reference one (:data:`REFERENCE_NEGATIVE_PROMPT`, what Wan's
  sampler and the diffusers examples use), not CFG against an empty string. Any other request
  runs as sent (the same rule as the Qwen engine's standard mode): its steps, its guidance
  (``guidance_scale_2`` defaulting to ``guidance_scale``), its negative prompt; CFG runs when
  ``guidance_scale`` is above 1 (diffusers' rule), so a ``guidance_scale_2`` above 1 next to a
  lower one is refused. Each substitution is named in the job's log line (``notes``).

**Files.** ``VIDEOKIT_MODEL_DIR`` (default: the first of ``/models/wan`` (baked into the image)
and ``/runpod-volume/models/wan`` (a network volume) that holds a complete set; or, instead of
that default, ``VIDEOKIT_MODEL_DIRS``, a search path of model directories separated by
``os.pathsep``, the first complete one winning, as for the Qwen engine) must look like::

    <model dir>/
      Wan2.2-I2V-A14B-Diffusers/       a diffusers snapshot of Wan-AI/Wan2.2-I2V-A14B-Diffusers
        model_index.json
        scheduler/scheduler_config.json
        tokenizer/...
        text_encoder/config.json, *.safetensors
        transformer/config.json, *.safetensors        (high-noise expert)
        transformer_2/config.json, *.safetensors      (low-noise expert)
        vae/config.json, *.safetensors
      Wan2.2-TI2V-5B-Diffusers/        (only for VIDEOKIT_WAN_MODEL=ti2v-5b; no transformer_2)
      loras/                           (lightning mode)
        wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors
        wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors
        (or the 1022 release: wan2.2_i2v_A14b_{high,low}_noise_lora_rank64_lightx2v_4step_1022)

Missing files raise :class:`~videokit.errors.ConfigError` naming each missing path and every
directory looked in (the search is :func:`videokit.worker.common.find_complete_dir`, shared with
the Qwen engine). Nothing is fetched from the Hugging Face Hub unless ``VIDEOKIT_ALLOW_HUB=1``
(and the image's ``HF_HUB_OFFLINE=1`` unset); then missing pieces are downloaded into the first
directory, in that layout, with the token in ``HF_TOKEN`` if one is set (never a login cached
on disk), and everything is still loaded from local files.

**Other settings**: ``VIDEOKIT_DTYPE`` (``bf16`` default, ``fp16``, ``fp32``: the transformers and
text encoder; the VAE always runs in fp32, as Wan's reference code does), ``VIDEOKIT_OFFLOAD``
(``none`` default; ``model``: one component on the GPU at a time, for 80 GB cards at 720p;
``sequential``: layer by layer, slow, for small cards), ``VIDEOKIT_DEVICE`` (``cuda`` by default;
without a visible CUDA device the engine refuses to load unless ``cpu`` is named explicitly; the
tiny engine defaults to ``cpu``). All read by :func:`load_engine`, never at import.

**Seeds.** The initial noise comes from a CPU ``torch.Generator`` seeded with ``request.seed``
(both engines do this): the same seed gives the same starting latents on every machine and GPU
model. The same request then gives the same pixels on the same hardware and software stack;
across GPU models or library versions, kernels round differently, so clips stay close but not
bit-identical.

**A job** decodes the input image, cover-fits it to width x height, runs the pipeline in a thread
with the seeded generator, encodes every
frame (less frame 0 with ``drop_first_frame``) as H.264 yuv420p at the requested fps (crf 16,
preset medium: visually lossless for a clip that is stitched and maybe re-encoded later; 81
frames at 832x480 took 10.5 s on 2 busy cores, so ~1-2 s on a GPU host's 16, next to ~30 s of
GPU), and returns the last frame as a lossless PNG of the
decoded pixels, never re-read from the MP4. All pipeline work runs on one dedicated thread, so
jobs on one engine run one at a time, in order, and the event loop stays free.

Cancelling the awaiting task stops the denoising loop at the next step boundary (the step
callback raises a private exception that unwinds the pipeline; a job still queued never starts);
``animate`` waits (up to 2 minutes) for the GPU to be released before it re-raises
``CancelledError``. A CUDA out-of-memory error propagates as torch raised it (the handler
classifies it) after the job's tensors are released and the allocator cache emptied.

Each load and each job logs one JSON line (stderr by default) with timings split into text
encoding, conditioning (the VAE encode of the input), denoising, VAE decode and H.264 encode,
plus peak GPU memory. Prompts are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from videokit.backends.base import JobContext, Stage
from videokit.errors import ConfigError
from videokit.media.ffmpeg import RawVideoWriter
from videokit.media.images import cover_fit, encode_png, load_rgb
from videokit.protocol import (
    AnimateRequest,
    AnimateResult,
    EditRequest,
    EditResult,
    MediaOutput,
    uses_lightning_defaults,
)
from videokit.worker.common import (
    DTYPE_NAMES,
    HubClient,
    HubFile,
    LogFn,
    ProgressFn,
    download_missing,
    emit,
    env_flag,
    env_option,
    env_text,
    find_complete_dir,
    hub_client,
    log_option,
    log_to_stderr,
    model_search_path,
    ms_since,
    parse_device,
    quiet_progress_bars,
    raise_if_cancelled,
    reject_unknown_options,
    release_failed_call,
    release_memory,
    require_device,
    threadsafe_progress,
    torch_dtype,
)
from videokit.worker.errors import JobInputError, is_cuda_oom
from videokit.worker.wan_checks import WanGrid, check_cfg_pair, check_lightning_steps

__all__ = [
    "BOUNDARY_RATIO",
    "DEFAULT_MODEL_DIRS",
    "LIGHTNING_SHIFT",
    "LIGHTNING_STEPS",
    "LORA_SETS",
    "MODELS",
    "REFERENCE_NEGATIVE_PROMPT",
    "LightningScheduler",
    "WanEngine",
    "WanModel",
    "WanPlan",
    "WanRender",
    "WanSettings",
    "apply_lightning",
    "lightning_sigmas",
    "load_engine",
    "locate_model_files",
    "make_lightning_scheduler",
    "resolve_settings",
]

ModelName = Literal["a14b", "ti2v-5b"]
Mode = Literal["lightning", "standard"]
DTypeName = Literal["bf16", "fp16", "fp32"]
Offload = Literal["none", "model", "sequential"]

#: Where the weights are looked for when no option or variable says (see load_engine):
#: baked into the image first (fast local disk), then a RunPod network volume.
DEFAULT_MODEL_DIRS: tuple[Path, ...] = (Path("/models/wan"), Path("/runpod-volume/models/wan"))

#: Wan2.2 A14B hands over from the high-noise to the low-noise expert at t = 0.9 x 1000.
BOUNDARY_RATIO = 0.9
#: The flow shift of LightX2V's 4-step schedule (and of Wan2.2 I2V's reference sampler).
LIGHTNING_SHIFT = 5.0
#: The step count the LightX2V LoRAs were distilled for; also the protocol's default.
LIGHTNING_STEPS = 4

#: The LightX2V LoRA pairs the engine recognises in ``loras/``, first found wins:
#: (tag for the engine identity, high-noise file, low-noise file). The tag is empty for the
#: canonical v1 pair (the one seed 000 shipped), so its identity is the plain mode name.
LORA_SETS: tuple[tuple[str, str, str], ...] = (
    (
        "",
        "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors",
        "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors",
    ),
    (
        "1022",
        "wan2.2_i2v_A14b_high_noise_lora_rank64_lightx2v_4step_1022.safetensors",
        "wan2.2_i2v_A14b_low_noise_lora_rank64_lightx2v_4step_1022.safetensors",
    ),
)
#: Wan's own negative prompt (``sample_neg_prompt`` in Wan2.1/2.2's shared config; the diffusers
#: examples use it, or its English translation). Standard mode sends it when a request has none:
#: the model's CFG was tuned against it, not against an empty prompt. UMT5 reads Chinese.
REFERENCE_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，"
    "低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，"
    "形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
# Where VIDEOKIT_ALLOW_HUB=1 fetches the canonical LoRA pair from (ComfyUI's repackaging).
_LORA_REPO = "Comfy-Org/Wan_2.2_ComfyUI_Repackaged"
_LORA_REPO_FOLDER = "split_files/loras"

# x264 settings for the delivered clip; see the module docstring. Threads pinned because x264's
# output depends on its thread count, so the same frames give the same bytes on any machine.
_CRF = 16
_PRESET = "medium"
_X264_THREADS = 8

# How long a cancelled job waits for the pipeline thread to reach its next step boundary (one
# A14B step at 720p is ~15 s on an H100; a VAE decode in progress cannot be interrupted).
_CANCEL_WAIT_S = 120.0


@dataclass(frozen=True)
class WanModel:
    """What differs between the supported Wan2.2 checkpoints."""

    key: ModelName
    name: str  # the identity's model part
    folder: str  # the diffusers snapshot's folder name under the model dir
    repo_id: str  # where VIDEOKIT_ALLOW_HUB=1 downloads it from
    two_experts: bool
    standard_steps: int
    standard_guidance: tuple[float, float | None]
    lightning: bool  # whether a LightX2V LoRA pair exists for it


MODELS: Mapping[str, WanModel] = {
    "a14b": WanModel(
        key="a14b",
        name="wan2.2-i2v-a14b",
        folder="Wan2.2-I2V-A14B-Diffusers",
        repo_id="Wan-AI/Wan2.2-I2V-A14B-Diffusers",
        two_experts=True,
        # Wan2.2's own i2v_A14B config: 40 steps, shift 5, guidance (3.5, 3.5), boundary 0.9.
        standard_steps=40,
        standard_guidance=(3.5, 3.5),
        lightning=True,
    ),
    "ti2v-5b": WanModel(
        key="ti2v-5b",
        name="wan2.2-ti2v-5b",
        folder="Wan2.2-TI2V-5B-Diffusers",
        repo_id="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
        two_experts=False,
        standard_steps=50,
        standard_guidance=(5.0, None),
        lightning=False,
    ),
}

# diffusers' annotations do not hold up under mypy --strict (lazy modules, dummy objects,
# unannotated constructors), so its classes are handled as Any here.
_diffusers: Any = importlib.import_module("diffusers")

_T = TypeVar("_T")


# -- settings --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WanSettings:
    """The engine's configuration, resolved from options and the worker environment."""

    model: WanModel
    mode: Mode
    dtype: DTypeName
    offload: Offload
    device: str
    device_setting: str  # where the device came from, for error messages
    model_dirs: tuple[Path, ...]
    model_dir_source: str  # how model_dirs was chosen, for error messages
    allow_hub: bool


def _choice(value: object, what: str, allowed: Sequence[str]) -> str:
    text = str(value).strip().lower()
    if text not in allowed:
        raise ConfigError(
            f"{what} must be one of {', '.join(allowed)}; got {str(value)!r}",
        )
    return text


def _option(
    given: object, env: Mapping[str, str], name: str, default: str | None
) -> tuple[object, str]:
    """The explicit option, else the environment variable, else the default, and which it was."""
    if given is not None:
        return given, "option"
    value = env_text(env, name)
    if value is not None:
        return value, name
    return default, "default"


def resolve_settings(
    *,
    model: object = None,
    model_dir: object = None,
    model_dirs: object = None,
    mode: object = None,
    dtype: object = None,
    offload: object = None,
    device: object = None,
    env: Mapping[str, str] | None = None,
    tiny: bool = False,
) -> WanSettings:
    """Resolve the engine settings: explicit options first, then ``env`` (default: the process
    environment, read now), then the defaults in the module docstring.

    Checks the form of every value; whether the device exists here is checked when the engine
    loads (:func:`~videokit.worker.common.require_device`), so settings resolve on any machine.
    """
    env = os.environ if env is None else env
    raw, source = _option(model, env, "VIDEOKIT_WAN_MODEL", "a14b")
    spec = MODELS[_choice(raw, _label(source, "model", "VIDEOKIT_WAN_MODEL"), tuple(MODELS))]

    raw, source = _option(mode, env, "VIDEOKIT_WAN_MODE", None)
    if raw is None:
        # ti2v-5b has no distillation LoRA, so its natural default is its own sampler.
        resolved_mode: Mode = "lightning" if spec.lightning else "standard"
    else:
        what = _label(source, "mode", "VIDEOKIT_WAN_MODE")
        resolved_mode = cast(Mode, _choice(raw, what, ("lightning", "standard")))
        if resolved_mode == "lightning" and not spec.lightning:
            raise ConfigError(
                f"{what}: lightning mode needs a 4-step LoRA pair, and none is known for "
                f"{spec.name}",
                hint="use VIDEOKIT_WAN_MODE=standard with ti2v-5b, or the a14b model",
            )

    raw, source = _option(dtype, env, "VIDEOKIT_DTYPE", "bf16")
    resolved_dtype = cast(
        DTypeName, _choice(raw, _label(source, "dtype", "VIDEOKIT_DTYPE"), tuple(DTYPE_NAMES))
    )

    raw, source = _option(offload, env, "VIDEOKIT_OFFLOAD", "none")
    resolved_offload = cast(
        Offload,
        _choice(
            raw, _label(source, "offload", "VIDEOKIT_OFFLOAD"), ("none", "model", "sequential")
        ),
    )

    raw, source = _option(device, env, "VIDEOKIT_DEVICE", None)
    device_setting = {"option": "the device option", "default": "the default device"}.get(
        source, source
    )
    resolved_device = parse_device(raw, device_setting, tiny=tiny)
    if resolved_offload != "none" and not resolved_device.startswith("cuda"):
        raise ConfigError(
            f"offload={resolved_offload} moves models between the CPU and a GPU; the device is "
            f"{resolved_device}",
            hint="use VIDEOKIT_OFFLOAD=none on a CPU",
        )

    dirs, dir_source = model_search_path(
        model_dir=model_dir, model_dirs=model_dirs, env=env, defaults=DEFAULT_MODEL_DIRS
    )
    allow_hub = env_flag(env, "VIDEOKIT_ALLOW_HUB", true=("1", "true", "yes", "on"))
    return WanSettings(
        model=spec,
        mode=resolved_mode,
        dtype=resolved_dtype,
        offload=resolved_offload,
        device=resolved_device,
        device_setting=device_setting,
        model_dirs=dirs,
        model_dir_source=dir_source,
        allow_hub=allow_hub,
    )


def _label(source: str, option: str, variable: str) -> str:
    return variable if source == variable else option


# -- model files -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelFiles:
    """Where a complete set of weights was found."""

    root: Path
    base: Path  # the diffusers snapshot folder
    loras: tuple[Path, ...]  # (high noise, low noise) in lightning mode, else ()
    lora_tag: str  # LORA_SETS tag of the pair found ("" for the canonical pair)


def _base_requirements(spec: WanModel) -> list[str]:
    """Relative paths a usable snapshot must contain; ``dir/*.safetensors`` means at least one."""
    required = ["model_index.json", "scheduler/scheduler_config.json", "tokenizer/"]
    components = ["text_encoder", "transformer", *(["transformer_2"] if spec.two_experts else [])]
    for component in [*components, "vae"]:
        required += [f"{component}/config.json", f"{component}/*.safetensors"]
    return required


def _missing_in(root: Path, spec: WanModel, mode: Mode) -> tuple[list[str], tuple[Path, ...], str]:
    """What ``root`` lacks (paths relative to it), and the LoRA pair it has if any."""
    missing: list[str] = []
    base = root / spec.folder
    for item in _base_requirements(spec):
        path = base / item
        if item.endswith("*.safetensors"):
            present = path.parent.is_dir() and any(path.parent.glob("*.safetensors"))
        elif item.endswith("/"):
            present = path.is_dir() and any(path.iterdir())
        else:
            present = path.is_file()
        if not present:
            missing.append(f"{spec.folder}/{item}")
    loras: tuple[Path, ...] = ()
    tag = ""
    if mode == "lightning":
        for candidate_tag, high, low in LORA_SETS:
            pair = (root / "loras" / high, root / "loras" / low)
            if all(p.is_file() for p in pair):
                loras, tag = pair, candidate_tag
                break
        else:
            # Name the canonical pair (and only what is absent of it): that is what to install.
            _, high, low = LORA_SETS[0]
            missing += [
                f"loras/{name}" for name in (high, low) if not (root / "loras" / name).is_file()
            ]
    return missing, loras, tag


def locate_model_files(
    settings: WanSettings, env: Mapping[str, str] | None = None, *, hub: HubClient | None = None
) -> ModelFiles:
    """Find a complete set of weights in ``settings.model_dirs`` (the first complete one wins).

    Raises ConfigError listing, for each place looked, whether it exists and exactly which files
    are missing there. With ``allow_hub`` the missing pieces are first downloaded through
    ``hub`` (default: ``huggingface_hub``) into the first directory (created if needed), with
    the token in ``env``'s ``HF_TOKEN`` if any (``env`` defaults to the process environment).
    """
    spec, mode = settings.model, settings.mode
    environ = os.environ if env is None else env

    def missing(root: Path) -> list[str]:
        return _missing_in(root, spec, mode)[0]

    search = find_complete_dir(settings.model_dirs, missing)
    report = search.report()
    if search.found is None and settings.allow_hub:
        root = settings.model_dirs[0]
        _download(root, spec, mode, environ, hub)
        after = find_complete_dir([root], missing)
        search = after
        if after.found is None:
            report += "\n" + after.report().replace(f"  {root}:", f"  {root} (after downloading):")
    if search.found is not None:
        root = search.found
        _, loras, tag = _missing_in(root, spec, mode)
        return ModelFiles(root=root, base=root / spec.folder, loras=loras, lora_tag=tag)
    hub_hint = (
        ""
        if settings.allow_hub
        else "; or set VIDEOKIT_ALLOW_HUB=1 (and unset HF_HUB_OFFLINE, which the worker image "
        "sets to 1) to download what is missing into the first directory at load time"
    )
    raise ConfigError(
        f"{spec.name} ({mode} mode) model files not found in {settings.model_dir_source}:\n"
        + report,
        hint=f"put a diffusers snapshot of {spec.repo_id} in <model dir>/{spec.folder}"
        + (
            f" and the LightX2V LoRAs in <model dir>/loras/ ({LORA_SETS[0][1]}, {LORA_SETS[0][2]})"
            if mode == "lightning"
            else ""
        )
        + "; workers/download_models.py --worker animate --target <model dir> does both"
        + "; choose the directory with VIDEOKIT_MODEL_DIR (or a search path with "
        + f"VIDEOKIT_MODEL_DIRS){hub_hint}",
    )


def _download(
    root: Path, spec: WanModel, mode: Mode, env: Mapping[str, str], hub: HubClient | None
) -> None:
    """Fetch what is missing under ``root`` from the Hub, into the layout above."""
    missing, _, _ = _missing_in(root, spec, mode)
    snapshot_needed = any(item.startswith(spec.folder + "/") for item in missing)
    loras = [
        HubFile(repo_id=_LORA_REPO, repo_path=f"{_LORA_REPO_FOLDER}/{name}", local_path=item)
        for item in missing
        if item.startswith("loras/")
        for name in [item.removeprefix("loras/")]
    ]
    download_missing(
        root,
        snapshot=(spec.repo_id, spec.folder) if snapshot_needed else None,
        files=loras,
        env=env,
        hub=hub,
    )


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


# -- loading ---------------------------------------------------------------------------------------


def _require_ftfy() -> None:
    # diffusers' Wan pipelines clean every prompt with ftfy but import it only if installed, so
    # without it every job would fail with a NameError; fail at load time instead.
    import importlib.util

    if importlib.util.find_spec("ftfy") is None:
        raise ConfigError(
            "the Wan pipeline needs the 'ftfy' package (diffusers cleans prompts with it)",
            hint="pip install ftfy (it belongs in the worker image with diffusers)",
        )


def _load_pipeline(settings: WanSettings, files: ModelFiles) -> Any:
    """Load the snapshot component by component, each moved to its place as soon as it loads.

    One component at a time keeps peak host memory at the largest component (~28 GB for an
    A14B expert in bf16) rather than the whole pipeline (~70 GB).
    """
    transformers: Any = importlib.import_module("transformers")
    d = _diffusers
    dtype = torch_dtype(settings.dtype)
    place = settings.device if settings.offload == "none" else "cpu"
    # Always local: anything fetched from the Hub was put into the model directory first.
    common: dict[str, Any] = {"local_files_only": True}
    base = str(files.base)

    def loaded(model: Any) -> Any:
        return model.to(place).eval()

    components: dict[str, Any] = {
        "text_encoder": loaded(
            transformers.UMT5EncoderModel.from_pretrained(
                base, subfolder="text_encoder", dtype=dtype, **common
            )
        ),
        "transformer": loaded(
            d.WanTransformer3DModel.from_pretrained(
                base, subfolder="transformer", dtype=dtype, **common
            )
        ),
        "vae": loaded(
            d.AutoencoderKLWan.from_pretrained(base, subfolder="vae", dtype=torch.float32, **common)
        ),
    }
    if settings.model.two_experts:
        components["transformer_2"] = loaded(
            d.WanTransformer3DModel.from_pretrained(
                base, subfolder="transformer_2", dtype=dtype, **common
            )
        )
    # The rest (tokenizer, scheduler, boundary_ratio / expand_timesteps) from model_index.json.
    return d.WanImageToVideoPipeline.from_pretrained(base, dtype=dtype, **components, **common)


def load_engine(
    *,
    tiny: bool,
    model: object = None,
    model_dir: object = None,
    model_dirs: object = None,
    mode: object = None,
    dtype: object = None,
    offload: object = None,
    device: object = None,
    env: object = None,
    log: object = None,
    hub: object = None,
    **unknown: object,
) -> WanEngine:
    """Load the Wan engine once, before the first job (see the module docstring for options).

    ``model`` (``a14b``/``ti2v-5b``), ``model_dir`` (one directory) or ``model_dirs`` (a search
    path), ``mode`` (``lightning``/``standard``), ``dtype`` (``bf16``/``fp16``/``fp32``),
    ``offload`` (``none``/``model``/``sequential``), ``device``: left None, each comes from
    ``env`` (default ``os.environ``, read now). ``log`` receives the JSON log lines (default:
    stderr); ``hub`` is what downloads with ``VIDEOKIT_ALLOW_HUB=1`` go through (default:
    ``huggingface_hub``; see :class:`~videokit.worker.common.HubClient`). Raises ConfigError for
    unknown or bad options and for missing model files.

    ``tiny=True``: the same pipeline class and code path with tiny random weights built in code
    (:mod:`videokit.worker.tiny_wan`) and synthetic LightX2V LoRAs written to a temporary folder
    and loaded from there, fp32 on the CPU by default; it takes only ``device``, and ``env`` for
    ``VIDEOKIT_WAN_MODE`` / ``VIDEOKIT_DEVICE``.

    Parameters are typed ``object`` so that this is a
    :class:`~videokit.worker.engines.ModelLoader` (``**options: object``); values are checked.
    """
    reject_unknown_options(
        "Wan",
        unknown,
        ("model", "model_dir", "model_dirs", "mode", "dtype", "offload", "device", "env", "log",
         "hub"),
    )  # fmt: skip
    environ = env_option(env)
    sink = log_option(log)
    client = hub_client(hub)
    _require_ftfy()
    quiet_progress_bars()
    started = time.perf_counter()
    timings: dict[str, int] = {}
    if tiny:
        given = {
            "model": model,
            "model_dir": model_dir,
            "model_dirs": model_dirs,
            "dtype": dtype,
            "offload": offload,
            "hub": hub,
        }
        refused = sorted(name for name, value in given.items() if value is not None)
        if refused:
            raise ConfigError(
                f"the tiny engine takes no {', '.join(refused)} option: it is always the "
                "A14B-shaped tiny model in fp32"
            )
        tiny_env = {k: environ[k] for k in ("VIDEOKIT_WAN_MODE", "VIDEOKIT_DEVICE") if k in environ}
        settings = resolve_settings(mode=mode, device=device, dtype="fp32", env=tiny_env, tiny=True)
        require_device(settings.device, settings.device_setting)
        pipe, lora_counts = _load_tiny(settings, timings)
        lora_tag, model_root = "", None
    else:
        settings = resolve_settings(
            model=model,
            model_dir=model_dir,
            model_dirs=model_dirs,
            mode=mode,
            dtype=dtype,
            offload=offload,
            device=device,
            env=environ,
        )
        # The device first: a worker without its GPU must say so, not ask for 70 GB of weights.
        require_device(settings.device, settings.device_setting)
        files = locate_model_files(settings, environ, hub=client)
        with _timed(timings, "load"):
            pipe = _load_pipeline(settings, files)
        lora_counts = {}
        if settings.mode == "lightning":
            with _timed(timings, "lora"):
                lora_counts = apply_lightning(pipe, files.loras[0], files.loras[1])
        lora_tag, model_root = files.lora_tag, str(files.root)
        with _timed(timings, "place"):
            _place(pipe, settings)
    engine = WanEngine(
        pipe,
        model_name="tiny-wan" if tiny else settings.model.name,
        mode=settings.mode,
        # Anything that changes the pixels goes into the identity: a non-default LoRA release or
        # dtype (the tiny engine has one fixed configuration).
        variant="" if tiny else "-".join(filter(None, (lora_tag, _non_default_dtype(settings)))),
        standard_steps=settings.model.standard_steps,
        standard_guidance=settings.model.standard_guidance,
        name="tiny" if tiny else "diffusers",
        log=sink,
    )
    timings["total"] = ms_since(started)
    emit(
        sink,
        {
            "event": "videokit.wan.load",
            "engine": engine.name,
            "model": engine.identity("animate"),
            "mode": settings.mode,
            "dtype": settings.dtype,
            "offload": settings.offload,
            "device": settings.device,
            "model_dir": model_root,
            "lora_modules": lora_counts or None,
            "timings_ms": timings,
        },
    )
    return engine


def _non_default_dtype(settings: WanSettings) -> str:
    return "" if settings.dtype == "bf16" else settings.dtype


def _load_tiny(settings: WanSettings, timings: dict[str, int]) -> tuple[Any, dict[str, int]]:
    from videokit.worker import tiny_wan

    with _timed(timings, "load"):
        pipe = tiny_wan.build_tiny_pipeline(device=settings.device)
    counts: dict[str, int] = {}
    if settings.mode == "lightning":
        with (
            _timed(timings, "lora"),
            tempfile.TemporaryDirectory(prefix="videokit-tiny-lora-") as tmp,
        ):
            high = tiny_wan.make_lightx2v_lora(
                Path(tmp) / LORA_SETS[0][1], pipe.transformer, seed=1
            )
            low = tiny_wan.make_lightx2v_lora(
                Path(tmp) / LORA_SETS[0][2], pipe.transformer_2, seed=2
            )
            counts = apply_lightning(pipe, high, low)
    else:
        # The real snapshot's scheduler: UniPC over flow sigmas, shift 5 (Wan2.2 I2V's config).
        pipe.scheduler = _diffusers.UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=LIGHTNING_SHIFT
        )
    return pipe, counts


def _place(pipe: Any, settings: WanSettings) -> None:
    if settings.offload == "model":
        pipe.enable_model_cpu_offload(device=settings.device)
    elif settings.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=settings.device)
    else:
        pipe.to(settings.device)
    pipe.set_progress_bar_config(disable=True)


# -- the engine ------------------------------------------------------------------------------------


@dataclass
class WanRender:
    """The pixels of one generation and what it cost.

    ``frames`` holds every frame the model made (frame 0 included), F x H x W x 3 uint8.
    ``timings_ms``: ``text_encode``, ``condition`` (input preprocessing and its VAE encode),
    ``denoise``, ``decode`` (VAE decode and post-processing), ``total``.
    """

    frames: npt.NDArray[np.uint8]
    steps: int
    guidance: tuple[float, float | None]
    timings_ms: dict[str, int]
    peak_memory_bytes: int | None
    timesteps: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # the plan's (WanPlan.notes)


@dataclass(frozen=True)
class WanPlan:
    """What one job runs, decided by :meth:`WanEngine.plan` before any GPU time is spent."""

    steps: int
    guidance: float
    guidance_2: float | None  # the low-noise expert's; None for a one-transformer model
    negative_prompt: str | None  # None: no negative prompt (diffusers encodes "")
    notes: list[str]  # what was substituted or ignored, for the job's log line


class WanEngine:
    """A loaded Wan2.2 pipeline serving animate jobs (one at a time)."""

    def __init__(
        self,
        pipe: Any,
        *,
        model_name: str,
        mode: Mode,
        variant: str = "",
        standard_steps: int = 40,
        standard_guidance: tuple[float, float | None] = (3.5, 3.5),
        name: str = "diffusers",
        log: LogFn | None = None,
    ) -> None:
        self.name = name
        self.pipeline = pipe
        self.mode: Mode = mode
        self.log: LogFn = log or log_to_stderr
        self._model_name = model_name
        self._variant = variant
        self._standard_steps = standard_steps
        self._standard_guidance = standard_guidance
        self._two_experts = getattr(pipe, "transformer_2", None) is not None
        #: The sizes and frame counts this pipeline can build (multiples of 16 for A14B).
        self.grid = WanGrid.of(pipe)
        self.size_multiple = self.grid.multiple
        # Every call into the pipeline runs on this one thread, in order: jobs are serialised
        # without a lock, and torch keeps one intra-op thread pool (a second Python thread
        # driving torch gets a second OpenMP team, and the two spin against each other: on a
        # 2-core CPU a tiny job took 10x longer from alternating threads).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="videokit-wan")
        self._closed = False

    # -- Engine protocol ---------------------------------------------------------------------------

    def identity(self, stage: Stage) -> str:
        tag = self.mode + (f"-{self._variant}" if self._variant else "")
        return f"{self._model_name}/{tag}@diffusers-{_diffusers.__version__}"

    async def edit(self, request: EditRequest, ctx: JobContext) -> EditResult:
        raise ConfigError(
            "the Wan engine serves animate jobs only",
            hint="run edit jobs on the Qwen-Image-Edit worker",
        )

    async def animate(self, request: AnimateRequest, ctx: JobContext) -> AnimateResult:
        """Generate the clip for ``request`` (see the module docstring)."""
        if self._closed:
            raise RuntimeError("this Wan engine was closed")
        self._check(request)
        if request.image.base64 is None:
            raise ValueError("image: the engine takes inline images; the handler fetches URLs")
        source = request.image.decode()
        progress = threadsafe_progress(asyncio.get_running_loop(), ctx.on_progress)
        cancel = threading.Event()
        record: dict[str, Any] = {
            "event": "videokit.wan.job",
            "job": ctx.scene,
            "model": self.identity("animate"),
            "frames": request.frames,
            "output_frames": request.output_frames,
            "width": request.width,
            "height": request.height,
            "fps": request.fps,
            "status": "running",
        }
        started = time.perf_counter()
        try:
            video, png, render, encode_ms = await self._in_thread(
                lambda: self._job(request, source, cancel, progress), cancel
            )
        except BaseException as exc:
            record["status"] = _status_of(exc)
            record["error_type"] = type(exc).__name__
            record["timings_ms"] = {"total": ms_since(started)}
            emit(self.log, record)
            raise
        elapsed_ms = ms_since(started)
        record.update(
            status="ok",
            steps=render.steps,
            guidance=list(render.guidance),
            notes=render.notes or None,
            timings_ms={**render.timings_ms, "encode": encode_ms, "job": elapsed_ms},
            peak_memory_bytes=render.peak_memory_bytes,
            video_bytes=len(video),
        )
        emit(self.log, record)
        return AnimateResult(
            video=MediaOutput.inline(video, "video/mp4"),
            last_frame=MediaOutput.inline(png, "image/png"),
            seed=request.seed,
            frames=request.output_frames,
            fps=request.fps,
            width=request.width,
            height=request.height,
            inference_ms=elapsed_ms,
            model=self.identity("animate"),
            peak_memory_bytes=render.peak_memory_bytes,
        )

    async def aclose(self) -> None:
        """Release the pipeline once the jobs already queued have run (see :meth:`close`)."""
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Refuse new jobs, let the queued ones finish, then free the pipeline and its memory."""
        if self._closed:
            return
        self._closed = True
        self._executor.submit(self._release).result()
        self._executor.shutdown(wait=False)

    # -- generation --------------------------------------------------------------------------------

    def render_frames(
        self,
        request: AnimateRequest,
        *,
        image: Image.Image | None = None,
        cancel: threading.Event | None = None,
        progress: ProgressFn | None = None,
    ) -> WanRender:
        """Run the pipeline for ``request`` (blocking) and return all its frames as uint8.

        What :meth:`animate` runs in its thread, before encoding; public so that tests and the
        benchmark see exactly the pixels a job is made of. ``image`` defaults to the request's
        input, decoded and cover-fitted.
        """
        if self._closed:
            raise RuntimeError("this Wan engine was closed")
        self._check(request)
        if image is None:
            image = self._input_image(request, request.image.decode())
        event, report = cancel or threading.Event(), progress or _no_progress
        return self._executor.submit(self._render, request, image, event, report).result()

    def _check(self, request: AnimateRequest) -> None:
        # Before any pipeline work: these would fail deep inside it, or run silently wrong.
        self.grid.check(self._model_name, request.width, request.height, request.frames)
        if self.mode == "lightning":
            check_lightning_steps(request.steps, distilled_for=LIGHTNING_STEPS)
        elif self._two_experts:
            check_cfg_pair(request.guidance_scale, request.guidance_scale_2)

    @staticmethod
    def _input_image(request: AnimateRequest, source: bytes) -> Image.Image:
        return cover_fit(load_rgb(source), request.width, request.height)

    def plan(self, request: AnimateRequest) -> WanPlan:
        """What this engine's mode runs for ``request``: steps, guidance, negative prompt, notes.

        Lightning: the request's steps, guidance 1.0 for both experts, no negative prompt (no
        unconditional pass). Standard: the request as sent, unless its steps and guidance are
        exactly the protocol's lightning defaults, which mean the model's reference settings
        (see the module docstring). ``notes`` names what was substituted or ignored. The second
        scale is None for a one-transformer model.
        """
        two = self._two_experts
        if self.mode == "lightning":
            chosen = request.guidance_scale != 1.0 or request.guidance_scale_2 not in (None, 1.0)
            return WanPlan(
                steps=request.steps,
                guidance=1.0,
                guidance_2=1.0 if two else None,
                negative_prompt=None,
                notes=["guidance_ignored_lightning"] if chosen else [],
            )
        negative = request.negative_prompt if request.negative_prompt.strip() else None
        if not uses_lightning_defaults(request):
            guidance = request.guidance_scale
            guidance_2 = (
                request.guidance_scale_2 if request.guidance_scale_2 is not None else guidance
            )
            return WanPlan(
                steps=request.steps,
                guidance=guidance,
                guidance_2=guidance_2 if two else None,
                negative_prompt=negative,
                notes=[],
            )
        notes = ["steps_reference", "guidance_reference"]
        if negative is None:
            negative = REFERENCE_NEGATIVE_PROMPT
            notes.append("negative_prompt_reference")
        reference, reference_2 = self._standard_guidance
        return WanPlan(
            steps=self._standard_steps,
            guidance=reference,
            guidance_2=reference_2 if two else None,
            negative_prompt=negative,
            notes=notes,
        )

    def _job(
        self,
        request: AnimateRequest,
        source: bytes,
        cancel: threading.Event,
        progress: ProgressFn,
    ) -> tuple[bytes, bytes, WanRender, int]:
        """The thread's whole job: decode, generate, encode. Returns (mp4, png, render, ms)."""
        image = self._input_image(request, source)
        render = self._render(request, image, cancel, progress)
        encode_started = time.perf_counter()
        video = self._encode(request, render.frames, cancel)
        png = encode_png(render.frames[-1])
        encode_ms = ms_since(encode_started)
        progress(1.0, "encoded")
        return video, png, render, encode_ms

    def _render(
        self,
        request: AnimateRequest,
        image: Image.Image,
        cancel: threading.Event,
        progress: ProgressFn,
    ) -> WanRender:
        plan = self.plan(request)
        steps = plan.steps
        total = steps + 2  # the denoising steps, then the decode and the encode
        if self.pipeline is None:
            raise RuntimeError("this Wan engine was closed")
        raise_if_cancelled(cancel)
        pipe = self.pipeline
        device = torch.device(pipe._execution_device)
        cuda = device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        timer = _PhaseTimer(pipe, device if cuda else None)

        def on_step_end(
            _pipe: Any, index: int, _timestep: Any, _tensors: dict[str, Any]
        ) -> dict[str, Any]:
            timer.step_done()
            progress((index + 1) / total, f"denoising step {index + 1}/{steps}")
            raise_if_cancelled(cancel)
            return {}

        # On the CPU whatever the device: the same seed gives the same starting noise on any
        # machine (diffusers draws it there and moves it; see the module docstring).
        generator = torch.Generator(device="cpu").manual_seed(request.seed)
        progress(0.0, "encoding the prompt")
        try:
            with timer.attached():
                output = pipe(
                    image=image,
                    prompt=request.prompt,
                    negative_prompt=plan.negative_prompt,
                    height=request.height,
                    width=request.width,
                    num_frames=request.frames,
                    num_inference_steps=steps,
                    guidance_scale=plan.guidance,
                    guidance_scale_2=plan.guidance_2,
                    generator=generator,
                    output_type="np",
                    callback_on_step_end=on_step_end,
                )
                frames = _to_uint8(output.frames[0])
                del output
        except BaseException as exc:
            # Before the error travels on: its traceback holds the job's tensors.
            release_failed_call(exc, cuda)
            raise
        timings = timer.finish()
        peak = int(torch.cuda.max_memory_allocated(device)) if cuda else None
        timesteps = [float(t) for t in pipe.scheduler.timesteps]
        progress((steps + 1) / total, "decoded")
        if frames.shape[0] != request.frames:
            raise RuntimeError(f"the pipeline made {frames.shape[0]} frames, not {request.frames}")
        return WanRender(
            frames=frames,
            steps=steps,
            guidance=(plan.guidance, plan.guidance_2),
            timings_ms=timings,
            peak_memory_bytes=peak,
            timesteps=timesteps,
            notes=plan.notes,
        )

    @staticmethod
    def _encode(
        request: AnimateRequest, frames: npt.NDArray[np.uint8], cancel: threading.Event
    ) -> bytes:
        first = 1 if request.drop_first_frame else 0
        with tempfile.TemporaryDirectory(prefix="videokit-wan-") as tmp:
            path = Path(tmp) / "clip.mp4"
            with RawVideoWriter(
                path,
                width=request.width,
                height=request.height,
                fps=request.fps,
                crf=_CRF,
                preset=_PRESET,
                threads=_X264_THREADS,
            ) as writer:
                for frame in frames[first:]:
                    raise_if_cancelled(cancel)
                    writer.write(frame)
            return path.read_bytes()

    async def _in_thread(self, work: Callable[[], _T], cancel: threading.Event) -> _T:
        """Run ``work`` on the engine's thread; on cancellation stop it, then re-raise.

        A job still waiting for the thread is dropped at once. A running one stops at its next
        denoising step; we wait (bounded) for that, so that a job reported cancelled has
        released the GPU.
        """
        future = self._executor.submit(work)
        wrapped = asyncio.wrap_future(future)
        try:
            return await asyncio.shield(wrapped)
        except asyncio.CancelledError:
            cancel.set()
            if not future.cancel():  # already running: it stops at its next step
                done, _ = await asyncio.wait({wrapped}, timeout=_CANCEL_WAIT_S)
                if not done:
                    wrapped.add_done_callback(_retrieve)
            raise

    def _release(self) -> None:
        cuda = torch.device(self.pipeline._execution_device).type == "cuda"
        self.pipeline = None
        release_memory(cuda)


def _status_of(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, JobInputError):
        return "invalid_input"
    return "oom" if is_cuda_oom(exc) else "error"


def _retrieve(future: asyncio.Future[Any]) -> None:
    # Collect the thread's exception (the expected PipelineCancelled, or a real one) so asyncio
    # does not log "exception was never retrieved" for a job whose caller is gone.
    if not future.cancelled():
        future.exception()


def _no_progress(fraction: float, message: str | None) -> None:
    return None


def _to_uint8(frames: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.uint8]:
    # The pipeline's float frames are in [0, 1]; round like diffusers' numpy_to_pil does.
    return np.ascontiguousarray(np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8))


class _PhaseTimer:
    """Splits one pipeline call into phases with hooks (the pipeline itself reports nothing).

    Text encoding: the text encoder's forward calls. Denoising: from the first expert call to the
    last step callback. Conditioning: what happened between the two (image preprocessing and the
    VAE encode of the conditioning clip). Decode: from the last step to the call's return. On a
    GPU each boundary synchronises the device (a few times per job, next to seconds-long steps),
    so the split measures work done rather than work queued.
    """

    def __init__(self, pipe: Any, cuda_device: torch.device | None) -> None:
        self._pipe = pipe
        self._cuda = cuda_device
        self._text_s = 0.0
        self._text_started: float | None = None
        self._started = 0.0
        self._denoise_started: float | None = None
        self._last_step: float | None = None

    def _now(self) -> float:
        if self._cuda is not None:
            torch.cuda.synchronize(self._cuda)
        return time.perf_counter()

    @contextlib.contextmanager
    def attached(self) -> Iterator[None]:
        handles: list[Any] = []

        def text_started(*_: Any) -> None:
            self._text_started = self._now()

        def text_done(*_: Any) -> None:
            if self._text_started is not None:
                self._text_s += self._now() - self._text_started
                self._text_started = None

        def expert_called(*_: Any) -> None:
            if self._denoise_started is None:
                self._denoise_started = self._now()

        pipe = self._pipe
        handles.append(pipe.text_encoder.register_forward_pre_hook(text_started))
        handles.append(pipe.text_encoder.register_forward_hook(text_done))
        for expert in (pipe.transformer, getattr(pipe, "transformer_2", None)):
            if expert is not None:
                handles.append(expert.register_forward_pre_hook(expert_called))
        self._started = self._now()
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def step_done(self) -> None:
        self._last_step = self._now()

    def finish(self) -> dict[str, int]:
        ended = self._now()
        denoise_started = self._denoise_started or ended
        last_step = self._last_step or denoise_started

        def ms(seconds: float) -> int:
            return max(0, round(seconds * 1000))

        return {
            "text_encode": ms(self._text_s),
            "condition": ms(denoise_started - self._started - self._text_s),
            "denoise": ms(last_step - denoise_started),
            "decode": ms(ended - last_step),
            "total": ms(ended - self._started),
        }


@contextlib.contextmanager
def _timed(timings: dict[str, int], name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = ms_since(started)
