"""The settings both engines resolve the same way: dtype, CPU offload, device, model directories
and Hub access (each an engine option, else its ``VIDEOKIT_*`` variable, else its default).

What differs per model (which offload modes work, the default model directories) is passed in;
the model and mode, whose names and tables are the model's own, stay with each engine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from videokit.errors import ConfigError
from videokit.worker.common import DTYPE_NAMES, env_flag, env_text, parse_device
from videokit.worker.diffusers_engine.model_files import model_search_path

__all__ = ["CommonSettings", "resolve_common", "setting"]

_TRUE = ("1", "true", "yes", "on")
# The long spellings of the dtypes, as torch names them.
_DTYPE_ALIASES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


@dataclass(frozen=True)
class CommonSettings:
    """The shared part of an engine's settings."""

    dtype: str  # a DTYPE_NAMES key
    offload: str
    device: str
    device_setting: str  # where the device came from, for error messages
    model_dirs: tuple[Path, ...]  # () for the tiny engine: built in code
    model_dir_source: str
    allow_hub: bool


def setting(given: object, env: Mapping[str, str], option: str, variable: str) -> tuple[str, str]:
    """The engine option, else the variable, as stripped lower-case text ("" when neither), and
    where it came from: ``the <option> option``, the variable's name, or ``the default``."""
    if given is not None:
        if not isinstance(given, str | os.PathLike):
            raise ConfigError(f"engine option {option!r} must be a string, got {given!r}")
        return os.fspath(given).strip().lower(), f"the {option} option"
    value = env_text(env, variable)
    if value is not None:
        return value.lower(), variable
    return "", "the default"


def resolve_common(
    *,
    dtype: object,
    offload: object,
    device: object,
    model_dir: object,
    model_dirs: object,
    env: Mapping[str, str],
    tiny: bool,
    offloads: Mapping[str, str | None],
    default_dirs: tuple[Path, ...],
) -> CommonSettings:
    """Resolve and check the shared settings. ``offloads`` maps each offload mode this model
    knows to None (supported) or the reason it is not."""
    text, source = setting(dtype, env, "dtype", "VIDEOKIT_DTYPE")
    name = _DTYPE_ALIASES.get(text, text) or ("fp32" if tiny else "bf16")
    if name not in DTYPE_NAMES:
        raise ConfigError(
            f"{source}: {text!r} is not a dtype the engines run in",
            hint=f"set VIDEOKIT_DTYPE to one of {', '.join(DTYPE_NAMES)} (bf16 is the default)",
        )
    text, source = setting(offload, env, "offload", "VIDEOKIT_OFFLOAD")
    offload_mode = text or "none"
    supported = [mode for mode, reason in offloads.items() if reason is None]
    if offload_mode not in offloads:
        raise ConfigError(
            f"{source}: {text!r} is not an offload mode",
            hint=f"set VIDEOKIT_OFFLOAD to one of {', '.join(supported)} (none is the default)",
        )
    reason = offloads[offload_mode]
    if reason is not None:
        raise ConfigError(
            f"{source}={offload_mode} is not supported: {reason}",
            hint=f"use one of {', '.join(supported)}, or a larger GPU",
        )
    text, device_source = setting(device, env, "device", "VIDEOKIT_DEVICE")
    device_setting = {"the default": "the default device"}.get(device_source, device_source)
    device_name = parse_device(text or None, device_setting, tiny=tiny)
    dirs: tuple[Path, ...] = ()
    dir_source = "built in code (tiny)"
    if not tiny:
        dirs, dir_source = model_search_path(
            model_dir=model_dir, model_dirs=model_dirs, env=env, defaults=default_dirs
        )
    return CommonSettings(
        dtype=name,
        offload=offload_mode,
        device=device_name,
        device_setting=device_setting,
        model_dirs=dirs,
        model_dir_source=dir_source,
        allow_hub=env_flag(env, "VIDEOKIT_ALLOW_HUB", true=_TRUE),
    )
