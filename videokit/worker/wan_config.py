"""The Wan engine's configuration: the checkpoints it runs, its settings and its model files.

Settings resolve from engine options, then the worker environment (``VIDEOKIT_WAN_MODEL``,
``VIDEOKIT_WAN_MODE``, ``VIDEOKIT_DTYPE``, ``VIDEOKIT_OFFLOAD``, ``VIDEOKIT_DEVICE``, the model
directories), then defaults; docs/workers.md is the manual. Model files are searched for in the
model directories' layout, the first complete one winning, and downloaded only when allowed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from videokit.errors import ConfigError
from videokit.worker.common import (
    env_text,
)
from videokit.worker.diffusers_engine.model_files import (
    HubClient,
    HubFile,
    HubSnapshot,
    cached_snapshot,
    download_missing,
    find_complete_dir,
)
from videokit.worker.diffusers_engine.settings import resolve_common

__all__ = [
    "BOUNDARY_RATIO",
    "DEFAULT_MODEL_DIRS",
    "LORA_REPO",
    "LORA_REPO_FOLDER",
    "LORA_REVISION",
    "LORA_SETS",
    "MODELS",
    "DTypeName",
    "Mode",
    "ModelFiles",
    "ModelName",
    "Offload",
    "WanModel",
    "WanSettings",
    "locate_model_files",
    "missing_files",
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
# Where VIDEOKIT_ALLOW_HUB=1 fetches the canonical LoRA pair from (ComfyUI's repackaging).
LORA_REPO = "Comfy-Org/Wan_2.2_ComfyUI_Repackaged"
LORA_REPO_FOLDER = "split_files/loras"
LORA_REVISION = "ee6f4a40737a995bf5818954cfce6d59443b0f04"


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
    revision: str  # the Hub commit it is pinned to (workers/models.py pins the same)


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
        revision="596658fd9ca6b7b71d5057529bbf319ecbc61d74",
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
        revision="b8fff7315c768468a5333511427288870b2e9635",
    ),
}

# diffusers' annotations do not hold up under mypy --strict (lazy modules, dummy objects,
# unannotated constructors), so its classes are handled as Any here.


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
    environment, read now), then the defaults (docs/workers.md).

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

    common = resolve_common(
        dtype=dtype,
        offload=offload,
        device=device,
        model_dir=model_dir,
        model_dirs=model_dirs,
        env=env,
        tiny=tiny,
        offloads={"none": None, "model": None, "sequential": None},
        default_dirs=DEFAULT_MODEL_DIRS,
    )
    if common.offload != "none" and not common.device.startswith("cuda"):
        # On a CPU worker offload moves nothing: most likely a mistake in the worker's settings.
        raise ConfigError(
            f"offload={common.offload} moves models between the CPU and a GPU; the device is "
            f"{common.device}",
            hint="use VIDEOKIT_OFFLOAD=none on a CPU",
        )
    return WanSettings(
        model=spec,
        mode=resolved_mode,
        dtype=cast(DTypeName, common.dtype),
        offload=cast(Offload, common.offload),
        device=common.device,
        device_setting=common.device_setting,
        model_dirs=common.model_dirs,
        model_dir_source=common.model_dir_source,
        allow_hub=common.allow_hub,
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


def _missing_base(base: Path, spec: WanModel) -> list[str]:
    """What the snapshot folder ``base`` lacks, as ``<folder>/<path>``."""
    missing: list[str] = []
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
    return missing


def _lora_pair(root: Path) -> tuple[tuple[Path, ...], str] | None:
    """The first LORA_SETS pair complete under ``root/loras``, with its tag."""
    for tag, high, low in LORA_SETS:
        pair = (root / "loras" / high, root / "loras" / low)
        if all(p.is_file() for p in pair):
            return pair, tag
    return None


def _missing_loras(root: Path) -> list[str]:
    # Name the canonical pair (and only what is absent of it): that is what to install.
    _, high, low = LORA_SETS[0]
    return [f"loras/{name}" for name in (high, low) if not (root / "loras" / name).is_file()]


def missing_files(root: Path, spec: WanModel, mode: Mode) -> list[str]:
    """What the model directory ``root`` lacks for ``spec`` in ``mode`` (relative paths)."""
    missing = _missing_base(root / spec.folder, spec)
    if mode == "lightning" and _lora_pair(root) is None:
        missing += _missing_loras(root)
    return missing


def _files(root: Path, base: Path, mode: Mode) -> ModelFiles:
    pair = _lora_pair(root) if mode == "lightning" else None
    loras, tag = pair if pair is not None else ((), "")
    return ModelFiles(root=root, base=base, loras=loras, lora_tag=tag)


def _cached_files(settings: WanSettings, env: Mapping[str, str]) -> tuple[ModelFiles | None, str]:
    spec, mode = settings.model, settings.mode
    found, line = cached_snapshot(
        spec.repo_id,
        spec.revision,
        env=env,
        missing=lambda base: _missing_base(base, spec),
        lora_roots=settings.model_dirs if mode == "lightning" else None,
        has_loras=lambda root: _lora_pair(root) is not None,
    )
    return (None if found is None else _files(found.lora_root, found.base, mode)), line


def locate_model_files(
    settings: WanSettings, env: Mapping[str, str] | None = None, *, hub: HubClient | None = None
) -> ModelFiles:
    """Find a complete set of weights in ``settings.model_dirs`` (the first complete one wins),
    else the snapshot in RunPod's cached models with the LoRAs from a model directory.

    Raises ConfigError listing, for each place looked, whether it exists and exactly which files
    are missing there. With ``allow_hub`` the missing pieces are first downloaded through
    ``hub`` (default: ``huggingface_hub``) into the first directory (created if needed), with
    the token in ``env``'s ``HF_TOKEN`` if any (``env`` defaults to the process environment).
    """
    spec, mode = settings.model, settings.mode
    environ = os.environ if env is None else env

    def missing(root: Path) -> list[str]:
        return missing_files(root, spec, mode)

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
        return _files(search.found, search.found / spec.folder, mode)
    cached, cache_report = _cached_files(settings, environ)
    if cached is not None:
        return cached
    report += "\n" + cache_report
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
    missing = missing_files(root, spec, mode)
    snapshot_needed = any(item.startswith(spec.folder + "/") for item in missing)
    loras = [
        HubFile(
            repo_id=LORA_REPO,
            repo_path=f"{LORA_REPO_FOLDER}/{name}",
            local_path=item,
            revision=LORA_REVISION,
        )
        for item in missing
        if item.startswith("loras/")
        for name in [item.removeprefix("loras/")]
    ]
    download_missing(
        root,
        snapshot=(
            HubSnapshot(spec.repo_id, spec.folder, spec.revision) if snapshot_needed else None
        ),
        files=loras,
        env=env,
        hub=hub,
    )
