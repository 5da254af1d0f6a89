"""The Wan2.2 image-to-video engine: diffusers' ``WanImageToVideoPipeline`` behind the worker.

    engine = load_engine(tiny=False)          # reads the worker environment, loads once
    result = await engine.animate(request, ctx)

:func:`load_engine` resolves the settings (:mod:`.wan_config`), finds or downloads the files,
loads each component straight onto the GPU, fuses the LightX2V LoRAs (:mod:`.wan_lightning`),
applies the speed options and runs the warm-up step; :class:`~.wan_engine.WanEngine` serves the
jobs. docs/workers.md is the manual: models, modes, files, options, seeds and logs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from videokit.errors import ConfigError
from videokit.worker.common import (
    emit,
    env_option,
    log_option,
    ms_since,
    quiet_progress_bars,
    reject_unknown_options,
    require_device,
    torch_dtype,
)
from videokit.worker.diffusers_engine.model_files import hub_client
from videokit.worker.diffusers_engine.options import OPTION_NAMES, EngineOptions, resolve_options
from videokit.worker.wan_config import (
    BOUNDARY_RATIO,
    DEFAULT_MODEL_DIRS,
    LORA_SETS,
    MODELS,
    ModelFiles,
    WanModel,
    WanSettings,
    locate_model_files,
    resolve_settings,
)
from videokit.worker.wan_engine import REFERENCE_NEGATIVE_PROMPT, WanEngine, WanPlan, WanRender
from videokit.worker.wan_lightning import (
    LIGHTNING_SHIFT,
    LIGHTNING_STEPS,
    LightningScheduler,
    apply_lightning,
    lightning_sigmas,
    make_lightning_scheduler,
)

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

# diffusers' annotations do not hold up under mypy --strict (lazy modules, dummy objects,
# unannotated constructors), so its classes are handled as Any here.
_diffusers: Any = importlib.import_module("diffusers")

# The options every loader takes besides the speed and memory table's.
_OPTIONS = ("model", "model_dir", "model_dirs", "mode", "dtype", "offload", "device", "env", "log",
            "hub")  # fmt: skip


def _require_ftfy() -> None:
    # diffusers' Wan pipelines clean every prompt with ftfy but import it only if installed, so
    # without it every job would fail with a NameError; fail at load time instead.
    import importlib.util

    if importlib.util.find_spec("ftfy") is None:
        raise ConfigError(
            "the Wan pipeline needs the 'ftfy' package (diffusers cleans prompts with it)",
            hint="pip install ftfy (it belongs in the worker image with diffusers)",
        )


def _load_pipeline(settings: WanSettings, files: ModelFiles, vae_dtype: str) -> Any:
    """Load the snapshot component by component, each straight onto its device.

    ``device_map`` has safetensors read each tensor into device memory directly, so a cold
    worker never stages ~64 GB in host memory first; with CPU offload the components stay on
    the CPU and diffusers moves them per call.
    """
    transformers: Any = importlib.import_module("transformers")
    d = _diffusers
    dtype = torch_dtype(settings.dtype)
    place = settings.device if settings.offload == "none" else "cpu"
    # Always local: anything fetched from the Hub was put into the model directory first.
    common: dict[str, Any] = {"local_files_only": True}
    base = str(files.base)

    common["device_map"] = place

    def loaded(model: Any) -> Any:
        return model.eval()

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
            d.AutoencoderKLWan.from_pretrained(
                base, subfolder="vae", dtype=torch_dtype(vae_dtype or "fp32"), **common
            )
        ),
    }
    if settings.model.two_experts:
        components["transformer_2"] = loaded(
            d.WanTransformer3DModel.from_pretrained(
                base, subfolder="transformer_2", dtype=dtype, **common
            )
        )
    # The rest (tokenizer, scheduler, boundary_ratio / expand_timesteps) from model_index.json.
    del common["device_map"]
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
    """Load the Wan engine once, before the first job (docs/workers.md lists every option).

    ``model`` (``a14b``/``ti2v-5b``), ``model_dir`` (one directory) or ``model_dirs`` (a search
    path), ``mode`` (``lightning``/``standard``), ``dtype`` (``bf16``/``fp16``/``fp32``),
    ``offload`` (``none``/``model``/``sequential``), ``device``: left None, each comes from
    ``env`` (default ``os.environ``, read now). ``log`` receives the JSON log lines (default:
    stderr); ``hub`` is what downloads with ``VIDEOKIT_ALLOW_HUB=1`` go through (default:
    ``huggingface_hub``; see :class:`~videokit.worker.common.HubClient`). Raises ConfigError for
    unknown or bad options and for missing model files.

    The speed and memory options of :mod:`~videokit.worker.diffusers_engine.options`
    (``attention``, ``compile``, ``fp8``, ``vae_dtype``, ``warmup``, ``text_encoder``,
    ``vae_tiling``, ``memory_limit``) come from ``unknown``'s names, else their variables.

    ``tiny=True``: the same pipeline class and code path with tiny random weights built in code
    (:mod:`videokit.worker.tiny_wan`) and synthetic LightX2V LoRAs written to a temporary folder
    and loaded from there, fp32 on the CPU by default; it takes ``device``, the speed and memory
    options, and ``env`` for ``VIDEOKIT_WAN_MODE`` / ``VIDEOKIT_DEVICE`` / those options'
    variables. It warms up only when asked (``warmup="on"``).

    Parameters are typed ``object`` so that this is a
    :class:`~videokit.worker.engines.ModelLoader` (``**options: object``); values are checked.
    """
    speed = {name: unknown.pop(name) for name in OPTION_NAMES if name in unknown}
    reject_unknown_options("Wan", unknown, (*_OPTIONS, *OPTION_NAMES))
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
        options = resolve_options(speed, environ, defaults={"warmup": "off"})
        require_device(settings.device, settings.device_setting)
        pipe, lora_counts = _load_tiny(settings, options, timings)
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
        options = _offload_options(resolve_options(speed, environ), settings)
        # The device first: a worker without its GPU must say so, not ask for 70 GB of weights.
        require_device(settings.device, settings.device_setting)
        files = locate_model_files(settings, environ, hub=client)
        with _timed(timings, "load"):
            pipe = _load_pipeline(settings, files, options.vae_dtype)
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
        variant="-".join(filter(None, (lora_tag, _non_default_dtype(settings, options))))
        if not tiny
        else "",
        standard_steps=settings.model.standard_steps,
        standard_guidance=settings.model.standard_guidance,
        name="tiny" if tiny else "diffusers",
        log=sink,
        options=options,
        device=settings.device,
    )
    with _timed(timings, "prepare"):
        prepared = engine.prepare()
    timings["total"] = engine.load_ms = ms_since(started)
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
            **prepared,
        },
    )
    return engine


def _non_default_dtype(settings: WanSettings, options: EngineOptions) -> str:
    # A bf16 VAE changes the pixels too (slightly): part of the identity.
    vae = "vae-bf16" if options.vae_dtype == "bf16" else ""
    dtype = "" if settings.dtype == "bf16" else settings.dtype
    return "-".join(filter(None, (dtype, vae)))


def _offload_options(options: EngineOptions, settings: WanSettings) -> EngineOptions:
    """With CPU offload diffusers moves components itself: no swap, no admission plan."""
    if settings.offload == "none":
        return options
    if options.text_encoder == "swap":
        raise ConfigError(
            f"{options.source('text_encoder')}=swap moves the text encoder itself; "
            f"offload={settings.offload} already moves every component",
            hint="leave VIDEOKIT_TEXT_ENCODER unset with CPU offload",
        )
    return dataclasses.replace(options, text_encoder="gpu", memory_limit=None)


def _load_tiny(
    settings: WanSettings, options: EngineOptions, timings: dict[str, int]
) -> tuple[Any, dict[str, int]]:
    from videokit.worker import tiny_wan

    with _timed(timings, "load"):
        pipe = tiny_wan.build_tiny_pipeline(device=settings.device)
        if options.vae_dtype == "bf16":
            pipe.vae.to(torch.bfloat16)
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


@contextlib.contextmanager
def _timed(timings: dict[str, int], name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = ms_since(started)
