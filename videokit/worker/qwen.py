"""The Qwen-Image-Edit engine: ``QwenImageEditPlusPipeline`` (diffusers) behind the worker protocol.

Loaded once per worker process by :func:`load_engine` (the ``diffusers`` and ``tiny`` engines of
:mod:`videokit.worker.engines`); every job then runs :meth:`QwenEngine.edit`. The settings and
files are :mod:`.qwen_config`'s, the engine :mod:`.qwen_engine`'s, the speed and memory options
the shared base's. docs/workers.md is the manual: models, modes, files, options, logs.
"""

from __future__ import annotations

import dataclasses
import importlib
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from videokit.errors import ConfigError
from videokit.worker.common import (
    LogFn,
    env_option,
    json_line,
    log_option,
    ms_since,
    quiet_progress_bars,
    reject_unknown_options,
    require_device,
    torch_dtype,
)
from videokit.worker.diffusers_engine.model_files import hub_client
from videokit.worker.diffusers_engine.options import OPTION_NAMES, EngineOptions, resolve_options
from videokit.worker.qwen_config import (
    DEFAULT_MODEL_DIRS,
    LIGHTNING_SCHEDULER_CONFIG,
    LIGHTNING_STEPS,
    MODELS,
    STANDARD_CFG,
    STANDARD_NEGATIVE_PROMPT,
    STANDARD_STEPS,
    QwenFiles,
    QwenModel,
    QwenSettings,
    locate_model_files,
    locate_model_root,
    lora_path,
    missing_files,
    resolve_settings,
)
from videokit.worker.qwen_engine import DEFAULT_AREA, QwenEngine, QwenPlan, default_size

__all__ = [
    "DEFAULT_AREA",
    "DEFAULT_MODEL_DIRS",
    "LIGHTNING_SCHEDULER_CONFIG",
    "LIGHTNING_STEPS",
    "MODELS",
    "STANDARD_CFG",
    "STANDARD_NEGATIVE_PROMPT",
    "STANDARD_STEPS",
    "QwenEngine",
    "QwenFiles",
    "QwenModel",
    "QwenPlan",
    "QwenSettings",
    "default_size",
    "load_engine",
    "locate_model_files",
    "locate_model_root",
    "missing_files",
    "refuse_unsupported",
    "resolve_settings",
]

# The options every loader takes besides the speed and memory table's.
_OPTIONS = ("model", "model_dir", "model_dirs", "mode", "dtype", "offload", "device", "env", "log",
            "hub")  # fmt: skip


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
    (default ``os.environ``, read now; see docs/workers.md). ``log`` receives the JSON log
    lines (default: stderr); ``hub`` is what downloads with ``VIDEOKIT_ALLOW_HUB=1`` go through
    (default: ``huggingface_hub``; see :class:`~videokit.worker.common.HubClient`). Raises
    :class:`~videokit.errors.ConfigError` for unknown or bad options and for missing files.

    The speed and memory options of :mod:`~videokit.worker.diffusers_engine.options` come from
    ``unknown``'s names, else their variables (the tiny engine warms up only when asked).

    The parameters are typed ``object`` so that this function is a
    :class:`~videokit.worker.engines.ModelLoader` (``**options: object``); values are checked.
    """
    speed = {name: unknown.pop(name) for name in OPTION_NAMES if name in unknown}
    reject_unknown_options("Qwen", unknown, (*_OPTIONS, *OPTION_NAMES))
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
    options = resolve_options(speed, env_option(env), defaults={"warmup": "off"} if tiny else {})
    refuse_unsupported(options, settings.dtype)
    # The device first: a worker without its GPU must say so, not ask for 60 GB of weights.
    require_device(settings.device, settings.device_setting)
    files: QwenFiles | None = None
    if not tiny:
        files = locate_model_files(settings, env_option(env), hub=client)
    quiet_progress_bars()
    started = time.perf_counter()
    timings: dict[str, int] = {}
    if tiny:
        engine = _load_tiny(settings, options, write, timings)
    else:
        assert files is not None
        pipe = _load_pipeline(settings, options, files, timings)
        engine = QwenEngine(pipe, settings, log=write, options=options)
    started_prepare = time.perf_counter()
    prepared = engine.prepare()
    timings["prepare"] = ms_since(started_prepare)
    elapsed = engine.load_ms = ms_since(started)
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
                "model_dir": None if files is None else str(files.root),
                "snapshot": None if files is None else str(files.base),
                "hub": settings.allow_hub,
                "load_ms": elapsed,
                "timings_ms": timings,
                **prepared,
            }
        )
    )
    return engine


def refuse_unsupported(options: EngineOptions, dtype: str) -> None:
    """ConfigError for the speed and memory options the Qwen engine cannot take (together)."""
    if options.fp8 != "off" and options.fuse_lora == "on":
        raise ConfigError(
            f"{options.source('fp8')}={options.fp8} with {options.source('fuse_lora')}=on: a LoRA "
            "cannot be fused into FP8 weights",
            hint="choose one: VIDEOKIT_FP8 (memory) or VIDEOKIT_FUSE_LORA (speed)",
        )
    if options.vae_dtype and options.vae_dtype != dtype:
        # QwenImageEditPlusPipeline casts the input image to the text embeddings' dtype before
        # its VAE encode, so a VAE in another dtype fails in the first job.
        raise ConfigError(
            f"{options.source('vae_dtype')}={options.vae_dtype}: the Qwen pipeline feeds its VAE "
            f"in the engine's dtype ({dtype})",
            hint="leave VIDEOKIT_VAE_DTYPE unset on the edit worker (it follows VIDEOKIT_DTYPE)",
        )
    if options.text_encoder == "swap":
        raise ConfigError(
            f"{options.source('text_encoder')}=swap: only the Wan engine moves its text encoder",
            hint="leave VIDEOKIT_TEXT_ENCODER unset on the edit worker",
        )


def _load_tiny(
    settings: QwenSettings, options: EngineOptions, log: LogFn, timings: dict[str, int]
) -> QwenEngine:
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
        pipe = _load_pipeline(
            dataclasses.replace(settings, model=model),
            options,
            QwenFiles(base=root / model.folder, root=root),
            timings,
        )
    return QwenEngine(
        pipe,
        dataclasses.replace(settings, model=model),
        log=log,
        image_sizes=(tiny_qwen.VAE_IMAGE_SIZE, tiny_qwen.CONDITION_IMAGE_SIZE),
        default_area=128 * 128,
        options=options,
    )


def _load_pipeline(
    settings: QwenSettings, options: EngineOptions, files: QwenFiles, timings: dict[str, int]
) -> Any:
    """``QwenImageEditPlusPipeline`` with the mode's scheduler and LoRAs, on its device.

    Component by component, each read straight onto its device (``device_map``: safetensors
    copies each tensor to device memory, never staging the ~58 GB in host memory; with CPU
    offload they stay on the CPU and diffusers moves them per call). Only local files are read.
    ``timings`` receives the milliseconds each step took.
    """
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer

    from videokit.worker.tiny_qwen import make_processor

    diffusers: Any = importlib.import_module("diffusers")  # untyped constructors: used as Any
    image_processors: Any = importlib.import_module("transformers")
    text_model: Any = Qwen2_5_VLForConditionalGeneration

    model = settings.model
    base = str(files.base)
    dtype = torch_dtype(settings.dtype)
    vae_dtype = torch_dtype(options.vae_dtype) if options.vae_dtype else dtype
    place = torch.device(settings.device) if settings.offload == "none" else torch.device("cpu")
    local: dict[str, Any] = {"local_files_only": True}
    mapped = {**local, "device_map": str(place)}

    def placed(name: str, load: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        component = load().eval()
        timings[name] = ms_since(started)
        return component

    text_encoder = placed(
        "text_encoder",
        lambda: text_model.from_pretrained(base, subfolder="text_encoder", dtype=dtype, **mapped),
    )
    transformer = placed(
        "transformer",
        lambda: diffusers.QwenImageTransformer2DModel.from_pretrained(
            base, subfolder="transformer", dtype=dtype, **mapped
        ),
    )
    vae = placed(
        "vae",
        lambda: diffusers.AutoencoderKLQwenImage.from_pretrained(
            base, subfolder="vae", dtype=vae_dtype, **mapped
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
                path = lora_path(files.root, model, variant.steps)
                if path is None:  # locate_model_files checked them; a file removed since
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
