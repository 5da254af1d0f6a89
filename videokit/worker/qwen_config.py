"""The Qwen-Image-Edit engine's configuration: its releases, settings, Lightning variants and files.

Settings resolve from engine options, then the worker environment (``VIDEOKIT_QWEN_MODEL``,
``VIDEOKIT_QWEN_MODE``, ``VIDEOKIT_DTYPE``, ``VIDEOKIT_OFFLOAD``, ``VIDEOKIT_DEVICE``, the model
directories), then defaults; docs/workers.md is the manual. Model files are searched for in the
model directories' layout, the first complete one winning, and downloaded only when allowed.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from videokit.errors import ConfigError
from videokit.worker.common import (
    env_option,
)
from videokit.worker.diffusers_engine.model_files import (
    DirSearch,
    HubClient,
    HubFile,
    HubSnapshot,
    cached_snapshot,
    download_missing,
    find_complete_dir,
)
from videokit.worker.diffusers_engine.settings import resolve_common, setting

__all__ = [
    "DEFAULT_MODEL_DIRS",
    "LIGHTNING_SCHEDULER_CONFIG",
    "LIGHTNING_STEPS",
    "MODELS",
    "STANDARD_CFG",
    "STANDARD_NEGATIVE_PROMPT",
    "STANDARD_STEPS",
    "LightningVariant",
    "Mode",
    "Offload",
    "QwenFiles",
    "QwenModel",
    "QwenSettings",
    "locate_model_files",
    "locate_model_root",
    "lora_path",
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
    revision: str  # the Hub commits pinned (workers/models.py pins the same)
    lora_revision: str


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
        revision="d3968ef930e841f4c73640fb8afa3b306a78167e",
        lora_revision="e74da8d4e71a54b341de86aa9f8d2509165aa513",
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
        revision="6f3ccc0b56e431dc6a0c2b2039706d7d26f22cb9",
        lora_revision="d74eba145674fd7e31b949324e148e21e7118abd",
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
#: protocol's Lightning defaults (see docs/workers.md).
STANDARD_STEPS = 40
STANDARD_CFG = 4.0
STANDARD_NEGATIVE_PROMPT = " "

_MODES: tuple[Mode, ...] = ("lightning", "standard")


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

    model_key = setting(model, environ, "model", "VIDEOKIT_QWEN_MODEL")[0] or "2509"
    model_key = model_key.removeprefix("qwen-image-edit-")
    if model_key not in MODELS:
        raise ConfigError(
            f"unknown Qwen-Image-Edit model {model_key!r}",
            hint=f"set VIDEOKIT_QWEN_MODEL to one of: {', '.join(MODELS)}",
        )
    mode_name = setting(mode, environ, "mode", "VIDEOKIT_QWEN_MODE")[0] or "lightning"
    if mode_name not in _MODES:
        raise ConfigError(
            f"unknown Qwen mode {mode_name!r}",
            hint="set VIDEOKIT_QWEN_MODE to 'lightning' (4/8-step LoRA) or 'standard'",
        )
    common = resolve_common(
        dtype=dtype,
        offload=offload,
        device=device,
        model_dir=model_dir,
        model_dirs=model_dirs,
        env=environ,
        tiny=tiny,
        offloads={
            "none": None,
            "model": None,
            "sequential": "accelerate's sequential offload fails on the Qwen2.5-VL text encoder "
            "with transformers 5.23 (peak with model offload: about the transformer, ~41 GB)",
        },
        default_dirs=DEFAULT_MODEL_DIRS,
    )
    return QwenSettings(
        tiny=tiny,
        model=MODELS[model_key],
        model_dirs=common.model_dirs,
        model_dir_source=common.model_dir_source,
        mode=mode_name,
        dtype=common.dtype,
        offload=cast(Offload, common.offload),
        device=common.device,
        device_setting=common.device_setting,
        allow_hub=common.allow_hub,
    )


# -- model files -----------------------------------------------------------------------------------


def missing_files(root: Path, model: QwenModel, mode: Mode) -> list[str]:
    """Paths (relative to ``root``) that must exist for ``model`` in ``mode`` and do not.

    Sharded weights are checked through their index: every shard it names must be there.
    """
    missing = _missing_base(root / model.folder, model)
    if mode == "lightning":
        missing += _missing_loras(root, model)
    return missing


def _missing_loras(root: Path, model: QwenModel) -> list[str]:
    return [
        f"loras/{model.loras[steps]}"
        for steps in sorted(model.loras)
        if lora_path(root, model, steps) is None
    ]


def _missing_base(folder: Path, model: QwenModel) -> list[str]:
    """What the diffusers folder ``folder`` lacks, as ``<model folder>/<path>``."""
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
    return missing


def lora_path(root: Path, model: QwenModel, steps: int) -> Path | None:
    name = model.loras[steps]
    candidates = [root / "loras" / name]
    if model.lora_subfolder:
        candidates.append(root / "loras" / model.lora_subfolder / name)
    return next((p for p in candidates if p.is_file()), None)


@dataclass(frozen=True)
class QwenFiles:
    """Where the weights were found: the diffusers folder, and the root holding ``loras/``."""

    base: Path
    root: Path


def locate_model_root(
    settings: QwenSettings, env: Mapping[str, str] | None = None, *, hub: HubClient | None = None
) -> Path:
    """The first of ``settings.model_dirs`` complete for the model and mode (ConfigError if none);
    :func:`locate_model_files` without RunPod's cached models."""
    files = locate_model_files(settings, env, hub=hub, cache=False)
    return files.root


def locate_model_files(
    settings: QwenSettings,
    env: Mapping[str, str] | None = None,
    *,
    hub: HubClient | None = None,
    cache: bool = True,
) -> QwenFiles:
    """The first of ``settings.model_dirs`` complete for the model and mode, else the snapshot in
    RunPod's cached models (at the pinned commit) with the LoRAs of a model directory.

    With ``allow_hub`` what is missing is first downloaded through ``hub`` (default:
    ``huggingface_hub``) into the first directory (created if needed), with the token in
    ``env``'s ``HF_TOKEN`` if any (``env`` defaults to the process environment).
    """
    model, mode = settings.model, settings.mode
    environ = os.environ if env is None else env

    def missing(root: Path) -> list[str]:
        return missing_files(root, model, mode)

    search = find_complete_dir(settings.model_dirs, missing)
    if search.found is not None:
        return QwenFiles(base=search.found / model.folder, root=search.found)
    report = search.report()
    if cache:
        cached, line = _cached_files(settings, environ)
        if cached is not None:
            return cached
        report += "\n" + line
    if settings.allow_hub:
        root = settings.model_dirs[0]
        _download(root, model, mode, environ, hub)
        after = find_complete_dir([root], missing)
        if after.found is not None:
            return QwenFiles(base=after.found / model.folder, root=after.found)
        report += "\n" + after.report().replace(f"  {root}:", f"  {root} (after downloading):")
    raise _missing_error(settings, search, report)


def _cached_files(settings: QwenSettings, env: Mapping[str, str]) -> tuple[QwenFiles | None, str]:
    model = settings.model
    found, line = cached_snapshot(
        model.repo,
        model.revision,
        env=env,
        missing=lambda base: _missing_base(base, model),
        lora_roots=settings.model_dirs if settings.mode == "lightning" else None,
        has_loras=lambda root: not _missing_loras(root, model),
    )
    return (None if found is None else QwenFiles(base=found.base, root=found.lora_root)), line


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
            revision=model.lora_revision,
        )
        for name in (model.loras[steps] for steps in sorted(model.loras))
        if f"loras/{name}" in missing
    ]
    download_missing(
        root,
        snapshot=(
            HubSnapshot(model.repo, model.folder, model.revision)
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
