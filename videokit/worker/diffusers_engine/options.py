"""The engines' speed and memory options: one table, resolved the same way for both models.

Each option is an engine option (``load_engine(attention="cudnn")``), else a ``VIDEOKIT_*``
variable of the worker, else its default. Every speed option defaults to off until a GPU
benchmark has measured it (``benchmarks/gpu_worker.py``); docs/workers.md lists them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, cast

from videokit.errors import ConfigError
from videokit.worker.common import env_text

__all__ = [
    "OPTIONS",
    "OPTION_NAMES",
    "EngineOptions",
    "OptionSpec",
    "parse_bytes",
    "resolve_options",
]

Attention = Literal["native", "cudnn", "flash3", "sage"]
Compile = Literal["off", "blocks"]
Fp8 = Literal["off", "weights", "dynamic"]
OnOff = Literal["on", "off"]
Residency = Literal["gpu", "swap", "auto"]
Tiling = Literal["auto", "on", "off"]


@dataclass(frozen=True)
class OptionSpec:
    """One row of the table: its variable, the values it takes, its default, what it does."""

    name: str
    variable: str
    choices: tuple[str, ...]  # empty: free-form (parsed by the option's own rule)
    default: str
    help: str


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "attention",
        "VIDEOKIT_ATTENTION",
        ("native", "cudnn", "flash3", "sage"),
        "native",
        "attention kernel through diffusers' dispatcher: PyTorch's default SDPA, cuDNN's "
        "(Hopper, no extra package), FlashAttention-3 or SageAttention (when installed); an "
        "unavailable one falls back to native, and the load log says why",
    ),
    OptionSpec(
        "compile",
        "VIDEOKIT_COMPILE",
        ("off", "blocks"),
        "off",
        "blocks: torch.compile the transformer's repeated blocks (regional compilation); the "
        "warm-up step at load pays the compile",
    ),
    OptionSpec(
        "fp8",
        "VIDEOKIT_FP8",
        ("off", "weights", "dynamic"),
        "off",
        "e4m3 transformer weights through torchao, after the LoRA fuse: weights (weight-only: "
        "half the memory, runs anywhere torchao does) or dynamic (FP8 matmuls too: compute "
        "capability 8.9+)",
    ),
    OptionSpec(
        "vae_dtype",
        "VIDEOKIT_VAE_DTYPE",
        ("fp32", "bf16"),
        "",
        "the VAE's dtype (default: the model's reference, fp32 for Wan and the engine dtype "
        "for Qwen)",
    ),
    OptionSpec(
        "fuse_lora",
        "VIDEOKIT_FUSE_LORA",
        ("on", "off"),
        "off",
        "Qwen lightning: fuse the active Lightning adapter into the weights (no per-step LoRA "
        "cost); a job with the other step count unfuses and fuses its own",
    ),
    OptionSpec(
        "warmup",
        "VIDEOKIT_WARMUP_STEP",
        ("on", "off"),
        "on",
        "run one real denoising step at load, so the first job finds kernels chosen and "
        "compiled (the tiny engine defaults to off)",
    ),
    OptionSpec(
        "text_encoder",
        "VIDEOKIT_TEXT_ENCODER",
        ("gpu", "swap", "auto"),
        "auto",
        "Wan's UMT5 (~11 GB): stays on the GPU, or is moved there to encode and back to "
        "pinned CPU memory after; auto swaps only for a job that needs the room",
    ),
    OptionSpec(
        "vae_tiling",
        "VIDEOKIT_VAE_TILING",
        ("auto", "on", "off"),
        "auto",
        "decode (and encode) the video in tiles; auto: above 832x480 pixels",
    ),
    OptionSpec(
        "memory_limit",
        "VIDEOKIT_GPU_MEMORY",
        (),
        "auto",
        "the memory a job may plan on (e.g. 79GiB); auto: the GPU's total, none on a CPU; off: "
        "no admission check",
    ),
)
OPTION_NAMES: tuple[str, ...] = tuple(spec.name for spec in OPTIONS)


@dataclass(frozen=True)
class EngineOptions:
    """The resolved table. ``sources`` says where each value came from, for messages."""

    attention: Attention = "native"
    compile: Compile = "off"
    fp8: Fp8 = "off"
    vae_dtype: str = ""  # "" = the model's default
    fuse_lora: OnOff = "off"
    warmup: OnOff = "on"
    text_encoder: Residency = "auto"
    vae_tiling: Tiling = "auto"
    memory_limit: int | Literal["auto"] | None = "auto"  # bytes; None = no admission check
    sources: Mapping[str, str] = field(default_factory=dict)

    def source(self, name: str) -> str:
        """``VIDEOKIT_X`` or ``the x option`` or ``the default``: for error messages."""
        return str(self.sources.get(name, "the default"))

    def summary(self) -> dict[str, object]:
        """The non-default values, for the load log line."""
        return {
            name: getattr(self, name) for name in OPTION_NAMES if self.source(name) != "the default"
        }


# The spellings an on/off option also takes (the client's own switches are read as booleans).
_SWITCH = {"1": "on", "true": "on", "yes": "on", "0": "off", "false": "off", "no": "off"}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kib|mib|gib|tib|kb|mb|gb|tb)?\s*$", re.IGNORECASE)
_UNITS = {
    "b": 1,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
}


def parse_bytes(text: str, what: str) -> int:
    """``79GiB``, ``80 GB``, ``1048576`` → bytes; ConfigError naming ``what`` otherwise."""
    match = _SIZE.match(text)
    if not match:
        raise ConfigError(
            f"{what}: {text!r} is not a memory size",
            hint="write it like 79GiB, 80GB or a number of bytes; or auto, or off",
        )
    number, unit = float(match.group(1)), (match.group(2) or "b").lower()
    return int(number * _UNITS[unit])


def resolve_options(
    given: Mapping[str, object], env: Mapping[str, str], *, defaults: Mapping[str, str] = {}
) -> EngineOptions:
    """Each option from ``given`` (engine options, None = unset), else ``env``, else its default
    (``defaults`` overrides the table's, per engine: the tiny engine warms up only on request)."""
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    for spec in OPTIONS:
        raw = given.get(spec.name)
        source = f"the {spec.name} option"
        if raw is None:
            raw, source = env_text(env, spec.variable), spec.variable
        if raw is None:
            raw, source = defaults.get(spec.name, spec.default), "the default"
        text = str(raw).strip().lower()
        if spec.choices == ("on", "off"):
            text = _SWITCH.get(text, text)
        if spec.name == "memory_limit":
            values[spec.name] = (
                "auto" if text == "auto" else None if text == "off" else parse_bytes(text, source)
            )
        elif spec.choices and text not in spec.choices and not (text == "" and not spec.default):
            raise ConfigError(
                f"{source}: {str(raw)!r} is not one of {', '.join(spec.choices)}",
                hint=f"{spec.variable}: {spec.help}",
            )
        else:
            values[spec.name] = text
        sources[spec.name] = source
    return EngineOptions(
        attention=cast(Attention, values["attention"]),
        compile=cast(Compile, values["compile"]),
        fp8=cast(Fp8, values["fp8"]),
        vae_dtype=cast(str, values["vae_dtype"]),
        fuse_lora=cast(OnOff, values["fuse_lora"]),
        warmup=cast(OnOff, values["warmup"]),
        text_encoder=cast(Residency, values["text_encoder"]),
        vae_tiling=cast(Tiling, values["vae_tiling"]),
        memory_limit=cast("int | Literal['auto'] | None", values["memory_limit"]),
        sources=sources,
    )
