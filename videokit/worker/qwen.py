"""The Qwen-Image-Edit engine: ``QwenImageEditPlusPipeline`` (diffusers) behind the worker protocol.

Loaded once per worker process by :func:`load_engine` (the ``diffusers`` and ``tiny`` engines of
:mod:`videokit.worker.engines`); every job then runs :meth:`QwenEngine.edit`.

**Configuration** (explicit options win; otherwise the worker environment, read when the engine
loads, never at import):

=========================  ===================================================================
``VIDEOKIT_QWEN_MODEL``    ``2509`` (default: Qwen-Image-Edit-2509) or ``2511``
``VIDEOKIT_MODEL_DIR``     the model root (below); default: the first *complete* one of
                           ``/models/qwen-edit`` (baked into the image) and
                           ``/runpod-volume/models/qwen-edit`` (a RunPod network volume)
``VIDEOKIT_MODEL_DIRS``    instead of that default, a search path: model roots separated by
                           ``os.pathsep`` (``:``), the first complete one wins (both engines;
                           not together with ``VIDEOKIT_MODEL_DIR``)
``VIDEOKIT_QWEN_MODE``     ``lightning`` (default) or ``standard``, see below
``VIDEOKIT_DTYPE``         ``bf16`` (default), ``fp16`` or ``fp32``
``VIDEOKIT_OFFLOAD``       ``none`` (default) or ``model``: components live in CPU memory and
                           move to the GPU while they run (diffusers' model CPU offload): the
                           peak is about the largest component (the transformer, ~41 GB in
                           bf16) instead of all of them (~58 GB), at the cost of copying each
                           component over PCIe on every job (seconds; not measured here)
``VIDEOKIT_DEVICE``        ``cuda`` (default; without a visible CUDA device the engine refuses
                           to load unless ``cpu`` is named), ``cuda:1``, ``cpu``; the tiny
                           engine defaults to ``cpu``
``VIDEOKIT_ALLOW_HUB``     ``1``: files missing under the model roots are downloaded from the
                           Hugging Face Hub into the first one, in the layout below, with the
                           token in ``HF_TOKEN`` if set (never a cached login); the image's
                           ``HF_HUB_OFFLINE=1`` must be unset too. Otherwise (the default)
                           nothing is downloaded. Either way everything loads from local files
=========================  ===================================================================

Left out on purpose, as they could not be exercised where this was written: *sequential* CPU
offload (layer by layer) fails with transformers 5.23 + accelerate 1.15 (accelerate's
``set_module_tensor_to_device`` meets a plain-tensor ``embed_tokens.weight`` in the Qwen2.5-VL
text encoder and raises ``TypeError``), and fp8/int8 quantisation through torchao (not
installed). A 48 GB GPU would need the latter.

**Model files.** ``<model root>`` holds the diffusers-format model folder, exactly as
``hf download Qwen/Qwen-Image-Edit-2509 --local-dir <root>/Qwen-Image-Edit-2509`` writes it, and
the Lightning LoRAs under ``loras/`` (flat, or in the subfolder ``hf download`` creates)::

    <root>/Qwen-Image-Edit-2509/model_index.json
                                scheduler/scheduler_config.json
                                text_encoder/config.json, model*.safetensors(.index.json)
                                tokenizer/tokenizer_config.json, vocab.json + merges.txt
                                processor/preprocessor_config.json, tokenizer files
                                transformer/config.json, diffusion_pytorch_model*.safetensors(...)
                                vae/config.json, diffusion_pytorch_model.safetensors
    <root>/loras/Qwen-Image-Edit-2509-Lightning-4steps-V1.0-bf16.safetensors  (lightning mode)
    <root>/loras/Qwen-Image-Edit-2509-Lightning-8steps-V1.0-bf16.safetensors

(``2511``: ``Qwen-Image-Edit-2511/`` and ``Qwen-Image-Edit-2511-Lightning-{4,8}steps-V1.0-bf16``
from ``lightx2v/Qwen-Image-Edit-2511-Lightning``.) The roots are searched in order and the first
that holds everything the model and mode need is used (the search is
:func:`videokit.worker.common.find_complete_dir`, shared with the Wan engine): an image with
2509 baked in still loads 2511 from a volume. If none is complete, a
:class:`~videokit.errors.ConfigError` names every place looked and every path missing there.
The components are then loaded one at a time, each moved to the device as soon as it is read,
so the host holds at most one (the ~41 GB transformer) rather than the whole pipeline.

**Modes.**

* ``lightning``: the Lightning distillation LoRAs (lightx2v), both loaded as PEFT adapters
  (``lightning-4``, ``lightning-8``; ~0.85 GB each in bf16) and one activated per job from the
  request's ``steps``, which must be 4 or 8. The scheduler is the one the Lightning authors
  distilled with: ``FlowMatchEulerDiscreteScheduler`` with exponential time shift and
  ``base_shift = max_shift = log(3)`` (a constant shift of 3 whatever the resolution),
  ``shift_terminal`` off, over the pipeline's default sigmas ``linspace(1, 1/steps, steps)``;
  timesteps 1000, 900, 750, 500 for 4 steps. The LoRAs are distilled without guidance, so CFG is
  always off (``true_cfg_scale`` 1; a request's other value is ignored and the job log says so).
* ``standard``: the model's own scheduler (its ``scheduler_config.json``) and true CFG, as the
  model cards run it. The protocol's defaults are the Lightning ones (``steps`` 8,
  ``true_cfg_scale`` 1.0, the :class:`~videokit.protocol.EditRequest` field defaults), which
  would run the undistilled model for 8 steps without guidance. So a request whose ``steps`` and
  ``true_cfg_scale`` are *exactly* those defaults (the client did not choose them) runs the
  reference settings instead: :data:`STANDARD_STEPS` (40), :data:`STANDARD_CFG` (4.0), and its
  negative prompt, or ``" "`` when it has none (one space, as the model cards write it). Any
  other request runs as sent (as in the Wan engine's standard mode): ``steps`` 6 means 6 steps,
  and true CFG runs only with ``true_cfg_scale`` above 1 *and* a negative prompt (diffusers'
  rule), costing a second transformer pass per step. The job's log line names each
  substitution (``notes``: ``steps_reference``, ``cfg_reference``,
  ``negative_prompt_reference``) and a CFG request that cannot run as given
  (``cfg_off_without_negative_prompt``, ``negative_prompt_unused_without_cfg``).

**Jobs.** Up to three input images (the first is edited, the others are references; decoded with
:func:`~videokit.media.images.load_rgb`), a CPU ``torch.Generator`` seeded with ``request.seed``
(both engines do this: the same seed gives the same starting latents on any machine; the same
request gives the same pixels on the same hardware and software, close but not bit-identical
across GPU models), and the output size from the request, or about one megapixel at
the first image's aspect ratio in multiples of 16. (diffusers' own default follows the *last*
image; the edited image is the first.) The pipeline runs in a worker thread, one job at a time;
``ctx.on_progress`` gets one report per denoising step. Cancelling the awaiting task stops the
denoising loop at the end of the current step (an event checked in ``callback_on_step_end``).
CUDA running out of memory propagates unchanged (the handler classifies it) once the job's
tensors are released and the allocator's cache emptied.

**Logs.** One JSON line per load (``videokit.qwen.load``) and per job (``videokit.qwen.job``:
sizes, steps, CFG, seed, phase timings, peak memory, status), written to stderr unless a ``log``
callable is given. Never the prompt, never image data.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import json
import math
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from videokit.backends.base import JobContext, Stage
from videokit.errors import ConfigError, VideoKitError
from videokit.media.images import MAX_IMAGE_PIXELS, encode_png, load_rgb
from videokit.protocol import (
    MAX_SIDE,
    MIN_SIDE,
    AnimateRequest,
    AnimateResult,
    EditRequest,
    EditResult,
    MediaOutput,
    uses_lightning_defaults,
)
from videokit.worker.common import (
    DTYPE_NAMES,
    DirSearch,
    HubClient,
    HubFile,
    LogFn,
    PipelineCancelled,
    ProgressFn,
    download_missing,
    env_flag,
    env_option,
    env_text,
    find_complete_dir,
    hub_client,
    inline_bytes,
    json_line,
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

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "DEFAULT_MODEL_DIRS",
    "LIGHTNING_SCHEDULER_CONFIG",
    "LIGHTNING_STEPS",
    "MODELS",
    "STANDARD_CFG",
    "STANDARD_NEGATIVE_PROMPT",
    "STANDARD_STEPS",
    "PhaseClock",
    "QwenEngine",
    "QwenModel",
    "QwenSettings",
    "default_size",
    "load_engine",
    "locate_model_root",
    "missing_files",
    "resolve_settings",
]

Mode = Literal["lightning", "standard"]
Offload = Literal["none", "model"]


@dataclass(frozen=True)
class QwenModel:
    """A Qwen-Image-Edit release: where its files come from and what they are called."""

    key: str
    name: str  # the identity's model part
    folder: str  # the diffusers model folder under the model root (= the Hub repo's name)
    repo: str  # the Hub repo of the model
    lora_repo: str  # the Hub repo of its Lightning LoRAs
    lora_subfolder: str | None  # their folder in that repo
    loras: Mapping[int, str]  # steps -> Lightning LoRA file name


MODELS: Mapping[str, QwenModel] = {
    "2509": QwenModel(
        key="2509",
        name="qwen-image-edit-2509",
        folder="Qwen-Image-Edit-2509",
        repo="Qwen/Qwen-Image-Edit-2509",
        lora_repo="lightx2v/Qwen-Image-Lightning",
        lora_subfolder="Qwen-Image-Edit-2509",
        loras={
            4: "Qwen-Image-Edit-2509-Lightning-4steps-V1.0-bf16.safetensors",
            8: "Qwen-Image-Edit-2509-Lightning-8steps-V1.0-bf16.safetensors",
        },
    ),
    "2511": QwenModel(
        key="2511",
        name="qwen-image-edit-2511",
        folder="Qwen-Image-Edit-2511",
        repo="Qwen/Qwen-Image-Edit-2511",
        lora_repo="lightx2v/Qwen-Image-Edit-2511-Lightning",
        lora_subfolder=None,
        loras={
            4: "Qwen-Image-Edit-2511-Lightning-4steps-V1.0-bf16.safetensors",
            8: "Qwen-Image-Edit-2511-Lightning-8steps-V1.0-bf16.safetensors",
        },
    ),
}

DEFAULT_MODEL_DIRS: tuple[Path, ...] = (
    Path("/models/qwen-edit"),
    Path("/runpod-volume/models/qwen-edit"),
)

#: The scheduler the Lightning LoRAs were distilled with (ModelTC/Qwen-Image-Lightning's
#: ``generate_with_diffusers.py``): exponential time shift with mu = log(3) at every resolution,
#: i.e. sigma' = 3 sigma / (1 + 2 sigma), no terminal stretch.
LIGHTNING_SCHEDULER_CONFIG: Mapping[str, Any] = {
    "base_image_seq_len": 256,
    "base_shift": math.log(3),
    "invert_sigmas": False,
    "max_image_seq_len": 8192,
    "max_shift": math.log(3),
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": None,
    "stochastic_sampling": False,
    "time_shift_type": "exponential",
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}


@dataclass(frozen=True)
class LightningVariant:
    """One Lightning LoRA: its step count, adapter name and scheduler settings."""

    steps: int
    scheduler_config: Mapping[str, Any]

    @property
    def adapter(self) -> str:
        return f"lightning-{self.steps}"


#: The Lightning variants by step count. Both were distilled with the same shift-3 schedule; they
#: differ in their LoRA file and in the number of steps the pipeline runs.
LIGHTNING_STEPS: Mapping[int, LightningVariant] = {
    4: LightningVariant(steps=4, scheduler_config=LIGHTNING_SCHEDULER_CONFIG),
    8: LightningVariant(steps=8, scheduler_config=LIGHTNING_SCHEDULER_CONFIG),
}

#: Standard mode's reference settings (the Qwen-Image-Edit-2509/2511 model cards: 40 steps,
#: true_cfg_scale 4.0, negative prompt " "), used for a request whose steps and CFG scale are the
#: protocol's Lightning defaults (see the module docstring).
STANDARD_STEPS = 40
STANDARD_CFG = 4.0
STANDARD_NEGATIVE_PROMPT = " "

_MODES: tuple[Mode, ...] = ("lightning", "standard")
_OFFLOADS: tuple[Offload, ...] = ("none", "model")
_TRUE = frozenset({"1", "true", "yes", "on"})

#: About one megapixel: the size Qwen-Image-Edit was trained at and diffusers' default output.
DEFAULT_AREA = 1024 * 1024
_MULTIPLE = 16  # VAE downsampling (8) x latent packing (2)


# -- settings --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QwenSettings:
    """Everything :func:`load_engine` resolved from its options and the environment."""

    tiny: bool
    model: QwenModel
    model_dirs: tuple[Path, ...]  # where to look, in order; () for tiny (built in code)
    model_dir_source: str  # how model_dirs were chosen, for error messages
    mode: Mode
    dtype: str  # bf16 / fp16 / fp32
    offload: Offload
    device: str
    device_setting: str  # where the device came from, for error messages
    allow_hub: bool


def resolve_settings(
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
) -> QwenSettings:
    """Options, else ``env`` (default: ``os.environ``), else defaults; ConfigError if invalid.

    Options are typed ``object``: they arrive from engine configuration, and are checked here.
    """
    environ = env_option(env)

    def pick(value: object, name: str, variable: str) -> str | None:
        if value is not None:
            if not isinstance(value, str | os.PathLike):
                raise ConfigError(f"engine option {name!r} must be a string, got {value!r}")
            return os.fspath(value).strip() or None
        return env_text(environ, variable)

    model_key = pick(model, "model", "VIDEOKIT_QWEN_MODEL") or "2509"
    model_key = model_key.lower().removeprefix("qwen-image-edit-")
    if model_key not in MODELS:
        raise ConfigError(
            f"unknown Qwen-Image-Edit model {model_key!r}",
            hint=f"set VIDEOKIT_QWEN_MODEL to one of: {', '.join(MODELS)}",
        )
    mode_name = (pick(mode, "mode", "VIDEOKIT_QWEN_MODE") or "lightning").lower()
    if mode_name not in _MODES:
        raise ConfigError(
            f"unknown Qwen mode {mode_name!r}",
            hint="set VIDEOKIT_QWEN_MODE to 'lightning' (4/8-step LoRA) or 'standard'",
        )
    dtype_name = pick(dtype, "dtype", "VIDEOKIT_DTYPE")
    dtype_name = (dtype_name or ("fp32" if tiny else "bf16")).lower()
    dtype_name = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(
        dtype_name, dtype_name
    )
    if dtype_name not in DTYPE_NAMES:
        raise ConfigError(
            f"unknown dtype {dtype_name!r}", hint="set VIDEOKIT_DTYPE to bf16, fp16 or fp32"
        )
    offload_name = (pick(offload, "offload", "VIDEOKIT_OFFLOAD") or "none").lower()
    if offload_name == "sequential":
        raise ConfigError(
            "VIDEOKIT_OFFLOAD=sequential is not supported: accelerate's sequential offload fails "
            "on the Qwen2.5-VL text encoder with transformers 5.23",
            hint="use VIDEOKIT_OFFLOAD=model (peak ≈ the transformer, ~41 GB) or a larger GPU",
        )
    if offload_name not in _OFFLOADS:
        raise ConfigError(
            f"unknown offload mode {offload_name!r}",
            hint="set VIDEOKIT_OFFLOAD to 'model' (or leave it unset)",
        )
    device_given = pick(device, "device", "VIDEOKIT_DEVICE")
    if device_given is None:
        device_setting = "the default device"
    else:
        device_setting = "the device option" if device is not None else "VIDEOKIT_DEVICE"
    device_name = parse_device(device_given, device_setting, tiny=tiny)
    allow_hub = env_flag(environ, "VIDEOKIT_ALLOW_HUB", true=_TRUE)

    dirs: tuple[Path, ...] = ()
    source = "built in code (tiny)"
    if not tiny:
        dirs, source = model_search_path(
            model_dir=model_dir, model_dirs=model_dirs, env=environ, defaults=DEFAULT_MODEL_DIRS
        )
    return QwenSettings(
        tiny=tiny,
        model=MODELS[model_key],
        model_dirs=dirs,
        model_dir_source=source,
        mode=mode_name,
        dtype=dtype_name,
        offload=offload_name,
        device=device_name,
        device_setting=device_setting,
        allow_hub=allow_hub,
    )


# -- model files -----------------------------------------------------------------------------------


def missing_files(root: Path, model: QwenModel, mode: Mode) -> list[str]:
    """Paths (relative to ``root``) that must exist for ``model`` in ``mode`` and do not.

    Sharded weights are checked through their index: every shard it names must be there.
    """
    folder = root / model.folder
    missing: list[str] = []

    def need(relative: str) -> None:
        if not (folder / relative).is_file():
            missing.append(f"{model.folder}/{relative}")

    def need_weights(component: str, stem: str) -> None:
        single = folder / component / f"{stem}.safetensors"
        index = folder / component / f"{stem}.safetensors.index.json"
        if single.is_file():
            return
        if not index.is_file():
            missing.append(f"{model.folder}/{component}/{stem}.safetensors (or its .index.json)")
            return
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            missing.append(f"{model.folder}/{component}/{index.name} (unreadable)")
            return
        missing.extend(
            f"{model.folder}/{component}/{shard}"
            for shard in shards
            if not (folder / component / shard).is_file()
        )

    def need_tokenizer(component: str) -> None:
        need(f"{component}/tokenizer_config.json")
        directory = folder / component
        if not (directory / "tokenizer.json").is_file() and not (
            (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file()
        ):
            missing.append(
                f"{model.folder}/{component}/tokenizer.json (or vocab.json + merges.txt)"
            )

    need("model_index.json")
    need("scheduler/scheduler_config.json")
    need("text_encoder/config.json")
    need_weights("text_encoder", "model")
    need_tokenizer("tokenizer")
    need("processor/preprocessor_config.json")
    need_tokenizer("processor")
    need("transformer/config.json")
    need_weights("transformer", "diffusion_pytorch_model")
    need("vae/config.json")
    need_weights("vae", "diffusion_pytorch_model")
    if mode == "lightning":
        for steps in sorted(model.loras):
            if _lora_path(root, model, steps) is None:
                missing.append(f"loras/{model.loras[steps]}")
    return missing


def _lora_path(root: Path, model: QwenModel, steps: int) -> Path | None:
    name = model.loras[steps]
    candidates = [root / "loras" / name]
    if model.lora_subfolder:
        candidates.append(root / "loras" / model.lora_subfolder / name)
    return next((p for p in candidates if p.is_file()), None)


def locate_model_root(
    settings: QwenSettings, env: Mapping[str, str] | None = None, *, hub: HubClient | None = None
) -> Path:
    """The first of ``settings.model_dirs`` complete for the model and mode (ConfigError if none).

    With ``allow_hub`` what is missing is first downloaded through ``hub`` (default:
    ``huggingface_hub``) into the first directory (created if needed), with the token in
    ``env``'s ``HF_TOKEN`` if any (``env`` defaults to the process environment).
    """
    model, mode = settings.model, settings.mode

    def missing(root: Path) -> list[str]:
        return missing_files(root, model, mode)

    search = find_complete_dir(settings.model_dirs, missing)
    if search.found is not None:
        return search.found
    report = search.report()
    if settings.allow_hub:
        root = settings.model_dirs[0]
        _download(root, model, mode, os.environ if env is None else env, hub)
        after = find_complete_dir([root], missing)
        if after.found is not None:
            return after.found
        report += "\n" + after.report().replace(f"  {root}:", f"  {root} (after downloading):")
    raise _missing_error(settings, search, report)


def _download(
    root: Path, model: QwenModel, mode: Mode, env: Mapping[str, str], hub: HubClient | None
) -> None:
    """Fetch what is missing under ``root`` from the Hub, into the layout above."""
    missing = missing_files(root, model, mode)
    loras = [
        HubFile(
            repo_id=model.lora_repo,
            repo_path=f"{model.lora_subfolder}/{name}" if model.lora_subfolder else name,
            local_path=f"loras/{name}",
        )
        for name in (model.loras[steps] for steps in sorted(model.loras))
        if f"loras/{name}" in missing
    ]
    download_missing(
        root,
        snapshot=(
            (model.repo, model.folder)
            if any(item.startswith(model.folder + "/") for item in missing)
            else None
        ),
        files=loras,
        env=env,
        hub=hub,
    )


def _missing_error(settings: QwenSettings, search: DirSearch, report: str) -> ConfigError:
    model = settings.model
    root = settings.model_dirs[0]
    lora_hint = ""
    if settings.mode == "lightning":
        files = " ".join(
            f"{model.lora_subfolder}/{name}" if model.lora_subfolder else name
            for name in model.loras.values()
        )
        lora_hint = f"; hf download {model.lora_repo} {files} --local-dir {root / 'loras'}"
    hub = (
        ""
        if settings.allow_hub
        else " (or set VIDEOKIT_ALLOW_HUB=1 and unset HF_HUB_OFFLINE, which the worker image "
        "sets to 1, to download what is missing into the first directory at load time)"
    )
    looked = ", ".join(str(d) for d, _ in search.looked)
    return ConfigError(
        f"Qwen-Image-Edit-{model.key} ({settings.mode} mode): no complete model directory in "
        f"{settings.model_dir_source} ({looked}):\n{report}",
        hint=f"hf download {model.repo} --local-dir {root / model.folder}{lora_hint}; or "
        f"workers/download_models.py --worker edit --model {model.key} --target {root}; "
        f"choose the directory with VIDEOKIT_MODEL_DIR (or a search path with "
        f"VIDEOKIT_MODEL_DIRS){hub}",
    )


# -- loading ---------------------------------------------------------------------------------------


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
) -> QwenEngine:
    """Load Qwen-Image-Edit (``tiny``: the same pipeline on tiny random weights) for the edit stage.

    ``model`` (``"2509"``/``"2511"``), ``model_dir`` (one directory) or ``model_dirs`` (a search
    path), ``mode`` (``"lightning"``/``"standard"``), ``dtype`` (``"bf16"``/``"fp16"``/
    ``"fp32"``), ``offload`` (``"model"``), ``device``: left ``None``, each comes from ``env``
    (default ``os.environ``, read now; see the module docstring). ``log`` receives the JSON log
    lines (default: stderr); ``hub`` is what downloads with ``VIDEOKIT_ALLOW_HUB=1`` go through
    (default: ``huggingface_hub``; see :class:`~videokit.worker.common.HubClient`). Raises
    :class:`~videokit.errors.ConfigError` for unknown or bad options and for missing files.

    The parameters are typed ``object`` so that this function is a
    :class:`~videokit.worker.engines.ModelLoader` (``**options: object``); values are checked.
    """
    reject_unknown_options(
        "Qwen",
        unknown,
        ("model", "model_dir", "model_dirs", "mode", "dtype", "offload", "device", "env", "log",
         "hub"),
    )  # fmt: skip
    write = log_option(log)
    client = hub_client(hub)
    settings = resolve_settings(
        tiny=tiny,
        model=model,
        model_dir=model_dir,
        model_dirs=model_dirs,
        mode=mode,
        dtype=dtype,
        offload=offload,
        device=device,
        env=env,
    )
    # The device first: a worker without its GPU must say so, not ask for 60 GB of weights.
    require_device(settings.device, settings.device_setting)
    root: Path | None = None
    if not tiny:
        root = locate_model_root(settings, env_option(env), hub=client)
    quiet_progress_bars()
    started = time.perf_counter()
    timings: dict[str, int] = {}
    if tiny:
        engine = _load_tiny(settings, write, timings)
    else:
        assert root is not None
        pipe = _load_pipeline(settings, root, timings)
        engine = QwenEngine(pipe, settings, log=write)
    elapsed = ms_since(started)
    write(
        json_line(
            {
                "event": "videokit.qwen.load",
                "identity": engine.identity("edit"),
                "model": settings.model.name if not tiny else "tiny",
                "mode": settings.mode,
                "adapters": sorted(engine.adapters),
                "dtype": settings.dtype,
                "device": settings.device,
                "offload": settings.offload,
                "model_dir": None if root is None else str(root),
                "hub": settings.allow_hub,
                "load_ms": elapsed,
                "timings_ms": timings,
            }
        )
    )
    return engine


def _load_tiny(settings: QwenSettings, log: LogFn, timings: dict[str, int]) -> QwenEngine:
    """Build the tiny pipeline, save it as a model root, and load that like real weights.

    Going through disk costs ~0.1 s and runs the real loader (layout check, ``from_pretrained``,
    processor assembly, LoRA files) on every tiny load. The folder is deleted once loaded.
    """
    from videokit.worker import tiny_qwen

    model = MODELS["2509"]
    with tempfile.TemporaryDirectory(prefix="videokit-tiny-qwen-") as workdir:
        root = Path(workdir)
        tiny_qwen.write_model_dir(
            tiny_qwen.build_pipeline(),
            root / model.folder,
            lora_files=[model.loras[steps] for steps in sorted(model.loras)],
        )
        missing = missing_files(root, model, settings.mode)
        if missing:  # a bug in write_model_dir, not a user error
            raise RuntimeError(f"the tiny model folder lacks {missing}")
        pipe = _load_pipeline(dataclasses.replace(settings, model=model), root, timings)
    return QwenEngine(
        pipe,
        dataclasses.replace(settings, model=model),
        log=log,
        image_sizes=(tiny_qwen.VAE_IMAGE_SIZE, tiny_qwen.CONDITION_IMAGE_SIZE),
        default_area=128 * 128,
    )


def _load_pipeline(settings: QwenSettings, root: Path, timings: dict[str, int]) -> Any:
    """``QwenImageEditPlusPipeline`` with the mode's scheduler and LoRAs, placed on the device.

    Component by component, each moved to its place as soon as it is read (as the Wan engine
    does): the host then holds one component at a time (the ~41 GB transformer at most) rather
    than all ~58 GB of a ``from_pretrained`` that is moved afterwards. Only local files are read.
    ``timings`` receives the milliseconds each step took.
    """
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer

    from videokit.worker.tiny_qwen import make_processor

    diffusers: Any = importlib.import_module("diffusers")  # untyped constructors: used as Any
    image_processors: Any = importlib.import_module("transformers")
    text_model: Any = Qwen2_5_VLForConditionalGeneration

    model = settings.model
    base = str(root / model.folder)
    dtype = torch_dtype(settings.dtype)
    place = torch.device(settings.device) if settings.offload == "none" else torch.device("cpu")
    local: dict[str, Any] = {"local_files_only": True}

    def placed(name: str, load: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        component = load().to(place).eval()
        timings[name] = ms_since(started)
        return component

    text_encoder = placed(
        "text_encoder",
        lambda: text_model.from_pretrained(base, subfolder="text_encoder", dtype=dtype, **local),
    )
    transformer = placed(
        "transformer",
        lambda: diffusers.QwenImageTransformer2DModel.from_pretrained(
            base, subfolder="transformer", dtype=dtype, **local
        ),
    )
    vae = placed(
        "vae",
        lambda: diffusers.AutoencoderKLQwenImage.from_pretrained(
            base, subfolder="vae", dtype=dtype, **local
        ),
    )
    started = time.perf_counter()
    # The processor is assembled here rather than by from_pretrained: the stock one also loads a
    # video processor, which needs torchvision (see tiny_qwen.ImageOnlyQwen2VLProcessor).
    processor = make_processor(
        image_processors.AutoImageProcessor.from_pretrained(base, subfolder="processor", **local),
        Qwen2Tokenizer.from_pretrained(base, subfolder="processor", **local),
    )
    # The rest (tokenizer, scheduler) from model_index.json; the heavy parts are given.
    pipe = diffusers.QwenImageEditPlusPipeline.from_pretrained(
        base,
        processor=processor,
        text_encoder=text_encoder,
        transformer=transformer,
        vae=vae,
        dtype=dtype,
        **local,
    )
    pipe.set_progress_bar_config(disable=True)
    timings["pipeline"] = ms_since(started)
    if settings.mode == "lightning":
        started = time.perf_counter()
        variants = list(LIGHTNING_STEPS.values())
        pipe.scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_config(
            dict(variants[0].scheduler_config)
        )
        with warnings.catch_warnings():
            # Two adapters in one model is the point; PEFT warns about it on the second.
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            for variant in variants:
                path = _lora_path(root, model, variant.steps)
                if path is None:  # locate_model_root checked them; a file removed since
                    raise ConfigError(f"the Lightning LoRA {model.loras[variant.steps]} vanished")
                pipe.load_lora_weights(
                    str(path.parent),
                    weight_name=path.name,
                    adapter_name=variant.adapter,
                    local_files_only=True,
                )
        timings["lora"] = ms_since(started)
    if settings.offload == "model":
        pipe.enable_model_cpu_offload(device=settings.device)
    return pipe


# -- output size -----------------------------------------------------------------------------------


def default_size(width: int, height: int, *, area: int = DEFAULT_AREA) -> tuple[int, int]:
    """About ``area`` pixels at ``width``:``height``, both sides multiples of 16 in the protocol's
    range (an extreme aspect ratio is clamped rather than producing a side over 1920)."""
    ratio = width / height
    w = math.sqrt(area * ratio)
    h = w / ratio
    scale = min(1.0, MAX_SIDE / w, MAX_SIDE / h)
    w, h = w * scale, h * scale

    def snap(side: float) -> int:
        return max(MIN_SIDE, min(MAX_SIDE, _MULTIPLE * round(side / _MULTIPLE)))

    return snap(w), snap(h)


# -- timing ----------------------------------------------------------------------------------------


@dataclass
class PhaseClock:
    """Splits a pipeline call into phases with hooks: text encoding, image (VAE) encoding,
    denoising, decoding. On CUDA each boundary synchronises, so the times are GPU times.

    :meth:`attach` once; :meth:`start` before each call, :meth:`step_done` from the step callback,
    :meth:`stop` after it; :meth:`phases_ms` then reads the split.
    """

    cuda: bool = False
    device: Any = None  # the CUDA device to synchronise (None: the current one)
    started: float = 0.0
    text_s: float = 0.0
    first_step: float | None = None
    last_step: float | None = None
    stopped: float | None = None
    steps: int = 0
    transformer_calls: int = 0
    _text_started: float | None = field(default=None, repr=False)

    def attach(self, pipe: Any) -> None:
        pipe.text_encoder.register_forward_pre_hook(self._text_pre)
        pipe.text_encoder.register_forward_hook(self._text_post)
        pipe.transformer.register_forward_pre_hook(self._transformer_pre)

    def _now(self) -> float:
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _text_pre(self, *args: Any) -> None:
        self._text_started = self._now()

    def _text_post(self, *args: Any) -> None:
        if self._text_started is not None:
            self.text_s += self._now() - self._text_started
            self._text_started = None

    def _transformer_pre(self, *args: Any) -> None:
        self.transformer_calls += 1
        if self.first_step is None:
            self.first_step = self._now()

    def start(self) -> None:
        self.started = self._now()
        self.text_s = 0.0
        self.first_step = self.last_step = self.stopped = None
        self.steps = self.transformer_calls = 0

    def step_done(self) -> None:
        self.steps += 1
        self.last_step = self._now()

    def stop(self) -> None:
        self.stopped = self._now()

    def phases_ms(self) -> dict[str, int]:
        """``text_encode``, ``image_encode`` (VAE + resizing), ``denoise``, ``decode`` in ms."""
        out: dict[str, int] = {"text_encode": round(self.text_s * 1000)}
        if self.first_step is not None:
            encode = self.first_step - self.started - self.text_s
            out["image_encode"] = max(0, round(encode * 1000))
            if self.last_step is not None:
                out["denoise"] = round((self.last_step - self.first_step) * 1000)
                if self.stopped is not None:
                    out["decode"] = round((self.stopped - self.last_step) * 1000)
        return out


# -- the engine ------------------------------------------------------------------------------------


_T = TypeVar("_T")


@dataclass
class _Plan:
    """What one job will run, decided before any GPU time is spent."""

    steps: int
    cfg_scale: float
    negative_prompt: str | None
    adapter: str | None
    notes: list[str]

    @property
    def cfg(self) -> bool:
        """Whether true CFG runs: diffusers needs a scale above 1 and a negative prompt."""
        return self.cfg_scale > 1 and self.negative_prompt is not None


class QwenEngine:
    """Runs edit jobs on one loaded ``QwenImageEditPlusPipeline`` (see the module docstring).

    ``image_sizes`` (tiny only) lowers the pipeline's internal resize targets for each call;
    ``default_area`` is the output pixel count when a request gives no size.
    """

    name = "diffusers"

    def __init__(
        self,
        pipe: Any,
        settings: QwenSettings,
        *,
        log: LogFn | None = None,
        image_sizes: tuple[int, int] | None = None,
        default_area: int = DEFAULT_AREA,
        max_image_pixels: int = MAX_IMAGE_PIXELS,
    ) -> None:
        import diffusers
        import torch

        self.pipe = pipe
        self.settings = settings
        self.name = "tiny" if settings.tiny else "diffusers"
        self.log = log or log_to_stderr
        self.image_sizes = image_sizes
        self.default_area = default_area
        self.max_image_pixels = max_image_pixels
        self._device = torch.device(settings.device)
        self._cuda = self._device.type == "cuda"
        self._busy = threading.Lock()  # one pipeline call at a time
        self._cancel: threading.Event | None = None  # the running job's
        self._closed = False
        self.adapters: frozenset[str] = (
            frozenset(name for names in pipe.get_list_adapters().values() for name in names)
            if settings.mode == "lightning"
            else frozenset()
        )
        self._active_adapter: str | None = None
        self.clock = PhaseClock(cuda=self._cuda, device=self._device if self._cuda else None)
        self.clock.attach(pipe)
        model_name = f"tiny-qwen-edit-v{_tiny_version()}" if settings.tiny else settings.model.name
        default_dtype = "fp32" if settings.tiny else "bf16"
        dtype = "" if settings.dtype == default_dtype else f"-{settings.dtype}"
        self._model_name = model_name
        self._dtype_tag = dtype
        self._version = f"diffusers-{diffusers.__version__}"

    # -- Engine protocol ---------------------------------------------------------------------------

    def identity(self, stage: Stage) -> str:
        """``<model>/<mode>@diffusers-<version>``, e.g. ``qwen-image-edit-2509/lightning@...``.

        In lightning mode the step count (4 or 8, which picks the LoRA) is a request field, so
        the engine's identity names the mode and each result's ``model`` names the variant
        (``qwen-image-edit-2509/lightning-8@diffusers-0.42.1``). A non-default dtype is
        appended to the mode (``standard-fp16``): it changes the pixels.
        """
        return f"{self._model_name}/{self.settings.mode}{self._dtype_tag}@{self._version}"

    def model_for(self, steps: int) -> str:
        """The ``model`` reported with a result of ``steps`` steps."""
        mode = f"lightning-{steps}" if self.settings.mode == "lightning" else "standard"
        return f"{self._model_name}/{mode}{self._dtype_tag}@{self._version}"

    async def animate(self, request: AnimateRequest, ctx: JobContext) -> AnimateResult:
        raise VideoKitError(
            "the Qwen-Image-Edit engine only edits images",
            hint="send animate jobs to a worker loaded for the animate stage (Wan2.2)",
        )

    async def aclose(self) -> None:
        """Stop a running job at its next step, wait for the pipeline, and free its memory."""
        if self._closed:
            return
        self._closed = True
        if self._cancel is not None:
            self._cancel.set()
        await asyncio.to_thread(self._busy.acquire)
        try:
            self.pipe = None
            release_memory(self._cuda)
        finally:
            self._busy.release()

    async def wait_idle(self) -> None:
        """Return once no pipeline call is running (a cancelled job's thread included)."""
        await asyncio.to_thread(self._busy.acquire)
        self._busy.release()

    # -- jobs --------------------------------------------------------------------------------------

    def plan(self, request: EditRequest) -> _Plan:
        """Check the request against the mode and decide steps, CFG and LoRA (JobInputError).

        Lightning: the request's 4 or 8 steps with their LoRA, CFG off. Standard: the request as
        sent, unless its steps and CFG scale are exactly the protocol's Lightning defaults, which
        mean the reference settings (see the module docstring). ``notes`` names each
        substitution, and each setting that cannot take effect.
        """
        notes: list[str] = []
        negative = request.negative_prompt if request.negative_prompt.strip() else None
        if self.settings.mode == "standard":
            if uses_lightning_defaults(request):
                notes += ["steps_reference", "cfg_reference"]
                if negative is None:
                    negative = STANDARD_NEGATIVE_PROMPT
                    notes.append("negative_prompt_reference")
                return _Plan(STANDARD_STEPS, STANDARD_CFG, negative, None, notes)
            if request.true_cfg_scale > 1 and negative is None:
                notes.append("cfg_off_without_negative_prompt")
            elif request.true_cfg_scale <= 1 and negative is not None:
                notes.append("negative_prompt_unused_without_cfg")
            return _Plan(request.steps, request.true_cfg_scale, negative, None, notes)
        variant = LIGHTNING_STEPS.get(request.steps)
        if variant is None:
            raise JobInputError(
                f"steps: this worker runs the Lightning LoRA, which takes 4 or 8 steps, "
                f"got {request.steps}",
                hint="send steps=8 (best quality) or steps=4 (fastest); other step counts "
                "need a worker in standard mode (VIDEOKIT_QWEN_MODE=standard)",
            )
        if request.true_cfg_scale != 1.0 or negative is not None:
            notes.append("cfg_ignored_lightning")
        return _Plan(variant.steps, 1.0, None, variant.adapter, notes)

    async def edit(self, request: EditRequest, ctx: JobContext) -> EditResult:
        if self._closed or self.pipe is None:
            raise VideoKitError("the Qwen engine is closed")
        record: dict[str, Any] = {
            "event": "videokit.qwen.job",
            "job": ctx.scene,
            "identity": self.identity("edit"),
            "images": len(request.images),
            "steps": request.steps,
            "seed": request.seed,
            "status": "running",
        }
        started = time.perf_counter()
        try:
            plan = self.plan(request)
            record.update(steps=plan.steps, cfg=plan.cfg)
            if plan.cfg:
                record["cfg_scale"] = plan.cfg_scale
            if plan.adapter:
                record["adapter"] = plan.adapter
            if plan.notes:
                record["notes"] = plan.notes
            sources = [
                inline_bytes(media, f"images[{i}]") for i, media in enumerate(request.images)
            ]
            ctx.on_progress(0.0, "encoding prompt and images")
            png, width, height, peak = await self._in_thread(
                lambda cancel, progress: self._run(
                    request, plan, sources, cancel, progress, record
                ),
                ctx.on_progress,
            )
        except asyncio.CancelledError:
            record["status"] = "cancelled"
            raise
        except BaseException as exc:
            record["status"] = _status_of(exc)
            record["error_type"] = type(exc).__name__
            raise
        else:
            record["status"] = "ok"
        finally:
            record["total_ms"] = ms_since(started)
            with contextlib.suppress(Exception):
                # A copy: after a cancellation the pipeline thread may still be writing timings.
                self.log(json_line(dict(record)))
        ctx.on_progress(1.0, "edit ready")
        return EditResult(
            image=MediaOutput.inline(png, "image/png"),
            seed=request.seed,
            width=width,
            height=height,
            inference_ms=record["total_ms"],
            model=self.model_for(plan.steps),
            peak_memory_bytes=peak,
        )

    def _run(
        self,
        request: EditRequest,
        plan: _Plan,
        sources: list[bytes],
        cancel: threading.Event,
        progress: ProgressFn,
        record: dict[str, Any],
    ) -> tuple[bytes, int, int, int | None]:
        """The job, in the worker thread: decode, run the pipeline, encode the PNG."""
        import torch

        decode_started = time.perf_counter()
        images: list[Image.Image] = [
            load_rgb(data, max_pixels=self.max_image_pixels) for data in sources
        ]
        record["input_sizes"] = [f"{img.width}x{img.height}" for img in images]
        if request.width is not None and request.height is not None:
            width, height = request.width, request.height
        else:
            width, height = default_size(*images[0].size, area=self.default_area)
        record.update(width=width, height=height)
        timings: dict[str, int] = {"decode_inputs": ms_since(decode_started)}
        record["timings_ms"] = timings

        waited = time.perf_counter()
        with self._busy:
            timings["queue"] = ms_since(waited)
            raise_if_cancelled(cancel)
            pipe = self.pipe
            if pipe is None:
                raise VideoKitError("the Qwen engine was closed")
            self._cancel = cancel
            try:
                if plan.adapter is not None and plan.adapter != self._active_adapter:
                    pipe.set_adapters([plan.adapter], [1.0])
                    self._active_adapter = plan.adapter
                if self._cuda:
                    torch.cuda.reset_peak_memory_stats(self._device)
                clock = self.clock
                steps = plan.steps

                def on_step_end(
                    _pipe: Any, step: int, _t: Any, _tensors: dict[str, Any]
                ) -> dict[str, Any]:
                    clock.step_done()
                    progress((step + 1) / (steps + 1), f"denoising step {step + 1}/{steps}")
                    raise_if_cancelled(cancel)
                    return {}

                # CPU noise for any device: see "Jobs" in the module docstring.
                generator = torch.Generator(device="cpu").manual_seed(request.seed)
                clock.start()
                try:
                    with self._image_sizes():
                        output = pipe(
                            image=images,
                            prompt=request.prompt,
                            negative_prompt=plan.negative_prompt,
                            true_cfg_scale=plan.cfg_scale,
                            height=height,
                            width=width,
                            num_inference_steps=steps,
                            generator=generator,
                            callback_on_step_end=on_step_end,
                            output_type="pil",
                        )
                except BaseException as exc:
                    # Before the error travels on: its traceback holds the job's tensors (a
                    # CUDA OOM is retried, maybe on this same worker).
                    release_failed_call(exc, self._cuda)
                    raise
                clock.stop()
                timings.update(clock.phases_ms())
                record["transformer_calls"] = clock.transformer_calls
                peak = int(torch.cuda.max_memory_allocated(self._device)) if self._cuda else None
                record["peak_memory_bytes"] = peak
            finally:
                self._cancel = None
        result = output.images[0]
        encode_started = time.perf_counter()
        png = encode_png(result)
        timings["encode_png"] = ms_since(encode_started)
        return png, result.width, result.height, peak

    @contextlib.contextmanager
    def _image_sizes(self) -> Iterator[None]:
        if self.image_sizes is None:
            yield
            return
        from videokit.worker.tiny_qwen import shrunk_image_sizes

        with shrunk_image_sizes(*self.image_sizes):
            yield

    async def _in_thread(
        self,
        work: Callable[[threading.Event, ProgressFn], _T],
        on_progress: ProgressFn,
    ) -> _T:
        """Run ``work`` in a thread; cancelling the awaiting task stops it at the next step."""
        progress = threadsafe_progress(asyncio.get_running_loop(), on_progress)
        cancel = threading.Event()
        try:
            return await asyncio.to_thread(work, cancel, progress)
        except asyncio.CancelledError:
            cancel.set()
            raise
        except PipelineCancelled:
            # Stopped from elsewhere (aclose): to the caller, a cancellation all the same.
            raise asyncio.CancelledError from None


# -- helpers ---------------------------------------------------------------------------------------


def _status_of(exc: BaseException) -> str:
    if isinstance(exc, JobInputError):
        return "invalid_input"
    return "oom" if is_cuda_oom(exc) else "error"


def _tiny_version() -> int:
    from videokit.worker.tiny_qwen import TINY_VERSION

    return TINY_VERSION
