"""The deploy spec (``examples/deploy.yaml``): its models, loading with clear errors, and warnings.

A spec names a prefix and, per worker (``edit``, ``animate``), the image, GPU pools, scaling,
timeouts, FlashBoot, where the weights come from (``weights``: baked into the image, a network
volume, or a RunPod cached model: ``cached_model``, the Hugging Face repository of the base
snapshot), disk and env. :func:`load_spec` reports every problem at once with the field's path; a
field RunPod's REST API v2 requires (``image``, ``gpus``) is refused here, before any request.
:func:`warnings_for` lists what would deploy but probably not run well.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NoReturn

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from videokit.errors import ConfigError, VideoKitError

__all__ = [
    "GPU_POOLS",
    "MODEL_REPOS",
    "MODEL_VRAM_GB",
    "RUNPOD_CUDA_VERSIONS",
    "STAGES",
    "WORKER_CUDA",
    "DeployError",
    "DeploySpec",
    "Stage",
    "Weights",
    "WorkerSpec",
    "cuda_versions_from",
    "load_spec",
    "model_reference",
    "warnings_for",
]

Stage = Literal["edit", "animate"]
STAGES: tuple[Stage, ...] = ("edit", "animate")
#: Where a worker's weights come from: ``baked`` into the image (BAKE_MODELS=1), a network
#: ``volume`` (network_volume_id), or a RunPod ``cached`` model (cached_model; the image bakes
#: only the LoRAs, BAKE_MODELS=loras). docs/deploy.md compares them.
Weights = Literal["baked", "volume", "cached"]

#: RunPod serverless GPU pools and their memory (GB); the same ids as ``videokit.costs`` prices.
GPU_POOLS: dict[str, int] = {
    "AMPERE_16": 16,
    "AMPERE_24": 24,
    "ADA_24": 24,
    "AMPERE_48": 48,
    "ADA_48_PRO": 48,
    "AMPERE_80": 80,
    "ADA_80_PRO": 80,
    "HOPPER_141": 141,
}

#: The CUDA versions RunPod reports for its hosts (the newest one each host's driver supports).
#: ``allowed_cuda_versions`` is matched exactly against these, so a spec must list every
#: version it accepts: a driver runs every CUDA version up to its own, so an image built for
#: 12.6 runs on all of 12.6 .. 13.0 hosts, and a list of just ["12.6"] would refuse the newer.
RUNPOD_CUDA_VERSIONS: tuple[str, ...] = (
    "11.8",
    "12.0",
    "12.1",
    "12.2",
    "12.3",
    "12.4",
    "12.5",
    "12.6",
    "12.7",
    "12.8",
    "12.9",
    "13.0",
)

#: The CUDA version the worker images are built for: the ``nvidia/cuda`` base image and the torch
#: wheel (``+cu126``, from the PyTorch index) of ``workers/*/Dockerfile``. The oldest of torch
#: 2.13's CUDA builds, which covers every pool (Ampere, Ada, Hopper) and the most hosts (driver
#: >= 560); the tests check that the Dockerfiles, this and ``examples/deploy.yaml`` agree.
WORKER_CUDA = "12.6"

#: GPU memory (GB) each model needs with every weight resident in bf16, by the engines' model
#: keys (the same numbers as workers/models.py, which the tests check).
MODEL_VRAM_GB: dict[str, int] = {"2509": 62, "2511": 62, "a14b": 80, "ti2v-5b": 32}

#: The Hugging Face repository of each model's base snapshot, by the engines' model keys (the
#: same as workers/models.py, which the tests check): a worker with ``weights: cached`` must cache
#: this one, since RunPod caches one model per endpoint (serverless/endpoints/model-caching).
MODEL_REPOS: dict[str, str] = {
    "2509": "Qwen/Qwen-Image-Edit-2509",
    "2511": "Qwen/Qwen-Image-Edit-2511",
    "a14b": "Wan-AI/Wan2.2-I2V-A14B-Diffusers",
    "ti2v-5b": "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
}
#: The form of a cached model in RunPod's model references (runpodctl's ``--model-reference``).
HF_MODEL_URL = "https://huggingface.co/"

# Common GPU names -> the pool that holds them, for "did you mean" hints.
_GPU_NAMES = {
    "H200": "HOPPER_141",
    "H100": "ADA_80_PRO",
    "A100": "AMPERE_80",
    "L40S": "ADA_48_PRO",
    "L40": "ADA_48_PRO",
    "6000ADA": "ADA_48_PRO",
    "A6000": "AMPERE_48",
    "A5000": "AMPERE_24",
    "A4500": "AMPERE_24",
    "A4000": "AMPERE_16",
    "A40": "AMPERE_48",
    "4090": "ADA_24",
    "3090": "AMPERE_24",
    "L4": "ADA_24",
}
_MODEL_ENV: dict[Stage, tuple[str, str]] = {
    "edit": ("VIDEOKIT_QWEN_MODEL", "2509"),
    "animate": ("VIDEOKIT_WAN_MODEL", "a14b"),
}

_PREFIX = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_CUDA = re.compile(r"^\d{2}\.\d$")
_LOCATION = re.compile(r"^[A-Z0-9][A-Z0-9-]{0,31}$")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$")
_HF_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_HF_REPO = re.compile(rf"^{_HF_NAME}/{_HF_NAME}$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")


class DeployError(VideoKitError):
    """RunPod refused or failed a request, or its state is ambiguous (duplicate names)."""


# What RunPod's REST API v2 calls the spec fields it requires (named when one is missing).
_REQUIRED_BY_V2 = {
    "name_prefix": "the 'name' of every template and endpoint",
    "image": "the 'image' of POST /v2/templates",
    "gpus": "the 'gpu.pools' of POST /v2/serverless",
}


# -- the spec --------------------------------------------------------------------------------------


class WorkerSpec(BaseModel):
    """One worker's template and endpoint. Times are in seconds."""

    model_config = ConfigDict(extra="forbid")

    image: str
    gpus: list[str] = Field(min_length=1, max_length=len(GPU_POOLS))
    gpu_count: int = Field(default=1, ge=1, le=8)
    workers_min: int = Field(default=0, ge=0, le=100)
    workers_max: int = Field(default=2, ge=0, le=100)
    idle_timeout: int = Field(default=5, ge=1, le=3600)
    execution_timeout: int = Field(default=600, ge=10, le=7 * 24 * 3600)
    flashboot: bool = True
    network_volume_id: str | None = None
    weights: Weights | None = None  # None: cached with cached_model, volume with a volume, baked
    cached_model: str | None = None
    cached_model_revision: str | None = None
    container_disk_gb: int = Field(default=20, ge=5, le=1000)
    scaler_type: Literal["QUEUE_DELAY", "REQUEST_COUNT"] = "QUEUE_DELAY"
    scaler_value: int = Field(default=4, ge=1, le=1000)
    allowed_cuda_versions: list[str] = Field(default_factory=list)
    locations: list[str] = Field(default_factory=list)
    registry_auth_id: str | None = None
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("image")
    @classmethod
    def _pinned_image(cls, image: str) -> str:
        if not _IMAGE.match(image):
            raise ValueError(f"{image!r} is not an image reference (registry/name:tag)")
        last = image.rsplit("/", 1)[-1]
        if "@sha256:" not in image and ":" not in last:
            raise ValueError(
                f"{image!r} has no tag: pin one (name:0.1.0) or a digest (name@sha256:...)"
            )
        if "@" not in image and last.rsplit(":", 1)[-1] == "latest":
            raise ValueError(
                f"{image!r}: 'latest' is not a pin; RunPod keeps running the image it pulled"
                " first, so an update would not roll out. Use a version tag or a digest"
            )
        return image

    @field_validator("gpus")
    @classmethod
    def _known_pools(cls, gpus: list[str]) -> list[str]:
        for pool in gpus:
            if pool not in GPU_POOLS:
                guess = _pool_guess(pool)
                guess = f"did you mean {guess!r}? " if guess else ""
                raise ValueError(
                    f"unknown GPU pool {pool!r}: {guess}known pools: {', '.join(GPU_POOLS)}"
                )
        if len(set(gpus)) != len(gpus):
            raise ValueError("a GPU pool is listed twice")
        return gpus

    @field_validator("network_volume_id", "registry_auth_id")
    @classmethod
    def _plain_id(cls, value: str | None) -> str | None:
        if value is not None and not _ID.match(value):
            raise ValueError(f"{value!r} is not a RunPod id (letters, digits, '-' and '_')")
        return value

    @field_validator("cached_model")
    @classmethod
    def _hf_repo(cls, repo: str | None) -> str | None:
        if repo is None:
            return repo
        if repo.startswith(("http://", "https://", "huggingface.co/")):
            short = repo.split("huggingface.co/", 1)[-1].split(":", 1)[0].strip("/")
            raise ValueError(
                f"give the Hugging Face repository id, not a URL: cached_model: {short}"
                " (deploy writes the reference RunPod wants)"
            )
        if ":" in repo or "@" in repo:
            raise ValueError(
                f"{repo!r}: put the revision in cached_model_revision, not in cached_model"
            )
        if not _HF_REPO.match(repo) or ".." in repo or "--" in repo:
            raise ValueError(
                f"{repo!r} is not a Hugging Face repository id (org/name, like"
                " Wan-AI/Wan2.2-I2V-A14B-Diffusers)"
            )
        return repo

    @field_validator("cached_model_revision")
    @classmethod
    def _revision(cls, revision: str | None) -> str | None:
        if revision is not None and (
            not _REVISION.match(revision) or ".." in revision or revision.endswith("/")
        ):
            raise ValueError(
                f"{revision!r} is not a revision: a branch or tag (main) or a 40-hex commit"
            )
        return revision

    @field_validator("allowed_cuda_versions")
    @classmethod
    def _cuda_versions(cls, versions: list[str]) -> list[str]:
        for version in versions:
            if not _CUDA.match(version):
                raise ValueError(f"{version!r} is not a CUDA version like '12.8' or '13.0'")
        return versions

    @field_validator("locations")
    @classmethod
    def _locations(cls, locations: list[str]) -> list[str]:
        for location in locations:
            if not _LOCATION.match(location):
                raise ValueError(f"{location!r} is not a location code like 'US' or 'EU-RO-1'")
        return locations

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, env: object) -> object:
        if not isinstance(env, Mapping):
            return env  # pydantic reports the type
        out: dict[str, str] = {}
        for key, value in env.items():
            if not isinstance(key, str) or not _ENV_KEY.match(key):
                raise ValueError(f"{key!r} is not an environment variable name")
            if key == "RUNPOD_API_KEY":
                raise ValueError(
                    "RUNPOD_API_KEY must not go into a template: workers do not need it, and"
                    " anyone who can read the template could read it"
                )
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise ValueError(
                    f'{key}: give the value as a string (quote it in YAML: {key}: "...");'
                    " YAML turns yes/no/on/off/~ into other types"
                )
            text = str(value)
            if "\x00" in text or any(0xD800 <= ord(ch) <= 0xDFFF for ch in text):
                raise ValueError(f"{key}: the value holds a NUL or an invalid character")
            out[key] = text
        return out

    @model_validator(mode="after")
    def _scaling(self) -> WorkerSpec:
        if self.workers_min > self.workers_max:
            raise ValueError(
                f"workers_min ({self.workers_min}) is larger than workers_max ({self.workers_max})"
            )
        return self

    @model_validator(mode="after")
    def _weights(self) -> WorkerSpec:
        if self.weights == "volume" and not self.network_volume_id:
            raise ValueError(
                "weights: volume needs network_volume_id, the network volume holding"
                " models/qwen-edit or models/wan (or use weights: cached or baked)"
            )
        if self.weights == "cached" and not self.cached_model:
            raise ValueError(
                "weights: cached needs cached_model, the Hugging Face repository of the model's"
                " snapshot (e.g. Wan-AI/Wan2.2-I2V-A14B-Diffusers; docs/deploy.md)"
            )
        if self.cached_model and self.weights not in (None, "cached"):
            raise ValueError(
                f"cached_model is only used with weights: cached (this worker has weights:"
                f" {self.weights}): remove it, or set weights: cached"
            )
        if self.cached_model_revision and not self.cached_model:
            raise ValueError("cached_model_revision without cached_model: name the repository")
        return self

    @property
    def weight_source(self) -> Weights:
        """``weights``, or what the spec implies: cached, else volume, else baked."""
        if self.weights is not None:
            return self.weights
        if self.cached_model:
            return "cached"
        return "volume" if self.network_volume_id else "baked"


def _pool_guess(pool: str) -> str | None:
    compact = re.sub(r"[^A-Z0-9]", "", pool.upper())
    for name, known in _GPU_NAMES.items():  # ordered: A4000 before A40, L40S before L4
        if name in compact:
            return known
    close = difflib.get_close_matches(pool.upper(), list(GPU_POOLS), n=1)
    return close[0] if close else None


class DeploySpec(BaseModel):
    """The whole deploy: a name prefix and the workers to deploy."""

    model_config = ConfigDict(extra="forbid")

    name_prefix: str = Field(
        description="templates and endpoints are called <name_prefix>-edit / -animate"
    )
    workers: dict[Stage, WorkerSpec] = Field(min_length=1)

    @field_validator("name_prefix")
    @classmethod
    def _prefix(cls, prefix: str) -> str:
        if not _PREFIX.match(prefix):
            raise ValueError(
                f"{prefix!r}: use 1-40 lowercase letters, digits and '-' (not at either end)"
            )
        return prefix


def load_spec(path: Path | str) -> DeploySpec:
    """Read and check a deploy spec; every problem is reported in one :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such deploy spec") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None
    try:
        document = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError(
            f"{path}: a deploy spec is a mapping with 'name_prefix' and 'workers'",
            hint="see examples/deploy.yaml",
        )
    try:
        spec = DeploySpec.model_validate(document)
    except ValidationError as exc:
        _invalid(path, [_problem(error) for error in exc.errors()])
    problems = [p for stage, worker in spec.workers.items() for p in _model_problems(stage, worker)]
    if problems:
        _invalid(path, problems)
    return spec


def _invalid(path: Path, problems: list[str]) -> NoReturn:
    head = (
        "invalid deploy spec"
        if len(problems) == 1
        else f"invalid deploy spec ({len(problems)} problems)"
    )
    raise ConfigError(
        f"{path}: {head}:\n" + "\n".join(f"- {p}" for p in problems),
        hint="see examples/deploy.yaml for every field, with comments",
    ) from None


def _model_problems(stage: Stage, spec: WorkerSpec) -> list[str]:
    """A cached model must be the snapshot of the model the worker's env selects."""
    if not spec.cached_model:
        return []
    variable, default = _MODEL_ENV[stage]
    model = spec.env.get(variable, default)
    wanted = MODEL_REPOS.get(model)
    if wanted is None or spec.cached_model == wanted:
        return []
    how = "spell it exactly" if spec.cached_model.lower() == wanted.lower() else "cache that one"
    return [
        f"workers.{stage}.cached_model: {spec.cached_model!r} is not the snapshot of model"
        f" {model} ({variable}): the worker loads {wanted}; {how}, or set {variable}"
    ]


def model_reference(spec: WorkerSpec) -> str | None:
    """The worker's cached model as RunPod references it, ``https://huggingface.co/<org>/<name>:
    <revision>`` (runpodctl's ``--model-reference``; ``main`` unless pinned), or None."""
    if not spec.cached_model:
        return None
    return f"{HF_MODEL_URL}{spec.cached_model}:{spec.cached_model_revision or 'main'}"


def _problem(error: Mapping[str, Any]) -> str:
    """One pydantic error as ``workers.edit.gpus.1: message`` (never the input value)."""
    parts = [str(p) for p in error.get("loc", ()) if p not in ("[key]",)]
    where = ".".join(parts) or "(top level)"
    message = str(error.get("msg", "invalid"))
    kind = error.get("type")
    message = message.removeprefix("Value error, ")
    if kind == "extra_forbidden":
        message = "unknown field"
        fields = _FIELDS.get(parts[-2] if len(parts) >= 2 and parts[-2] in STAGES else "")
        if fields:
            close = difflib.get_close_matches(parts[-1], fields, n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
    elif kind == "missing" and parts and parts[-1] in _REQUIRED_BY_V2:
        message = (
            f"missing: RunPod's REST API v2 requires it ({_REQUIRED_BY_V2[parts[-1]]});"
            " see examples/deploy.yaml"
        )
    elif kind == "literal_error" and tuple(error.get("loc", ()))[-1:] == ("[key]",):
        message = f"unknown worker (the workers are: {', '.join(STAGES)})"
    return f"{where}: {message}"


_FIELDS: dict[str, list[str]] = {stage: list(WorkerSpec.model_fields) for stage in STAGES}
_FIELDS[""] = list(DeploySpec.model_fields)


def cuda_versions_from(minimum: str) -> list[str]:
    """Every RunPod CUDA version from ``minimum`` up: the ``allowed_cuda_versions`` to list."""
    return [v for v in RUNPOD_CUDA_VERSIONS if _version(v) >= _version(minimum)]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _cuda_warnings(spec: WorkerSpec) -> list[str]:
    wanted = ", ".join(cuda_versions_from(WORKER_CUDA))
    allowed = spec.allowed_cuda_versions
    if not allowed:
        return [
            f"no allowed_cuda_versions: RunPod may place workers on hosts whose driver predates "
            f"CUDA {WORKER_CUDA}, where the image refuses to start; list [{wanted}]"
        ]
    warnings: list[str] = []
    old = [v for v in allowed if _version(v) < _version(WORKER_CUDA)]
    if old:
        warnings.append(
            f"allowed_cuda_versions has {', '.join(old)}: the images need CUDA {WORKER_CUDA} or "
            f"newer (workers/*/Dockerfile) and do not start on those hosts"
        )
    lowest = min(allowed, key=_version)
    skipped = [v for v in cuda_versions_from(lowest) if v not in allowed]
    if skipped:
        warnings.append(
            f"allowed_cuda_versions leaves out {', '.join(skipped)}: RunPod matches the list "
            f"exactly, so hosts with those (newer) drivers are excluded although the image runs "
            f"on them; list [{wanted}]"
        )
    return warnings


def warnings_for(stage: Stage, spec: WorkerSpec) -> list[str]:
    """What would deploy but probably not run well (or cost more than expected)."""
    warnings: list[str] = _cuda_warnings(spec)
    variable, default = _MODEL_ENV[stage]
    model = spec.env.get(variable, default)
    need = MODEL_VRAM_GB.get(model)
    offloaded = spec.env.get("VIDEOKIT_OFFLOAD", "none").strip().lower() not in ("", "none")
    if need is not None and not offloaded:
        small = [pool for pool in spec.gpus if GPU_POOLS[pool] * spec.gpu_count < need]
        if small:
            warnings.append(
                f"{', '.join(small)} has less than the ~{need} GB model {model} needs with every"
                " weight resident in bf16: set VIDEOKIT_OFFLOAD=model (workers/README.md)"
            )
    source = spec.weight_source
    if source == "baked" and spec.weights is None:
        warnings.append(
            "no network_volume_id: the image must have the weights baked in (BAKE_MODELS=1);"
            " say so with weights: baked, or use weights: cached (docs/deploy.md)"
        )
    if source == "cached" and spec.network_volume_id:
        warnings.append(
            "network_volume_id with weights: cached: RunPod mounts both at /runpod-volume"
            " (serverless/endpoints/model-caching) without saying how they combine, and a volume"
            " pins the endpoint to its data center; leave the volume out"
        )
    if spec.workers_min > 0:
        warnings.append(
            f"workers_min={spec.workers_min}: always-on workers are billed even when idle"
        )
    if spec.workers_max == 0:
        warnings.append("workers_max=0: the endpoint will run no jobs")
    if spec.scaler_type == "REQUEST_COUNT" and "idle_timeout" in spec.model_fields_set:
        warnings.append(
            "idle_timeout is not sent: RunPod's v2 API rejects it on a queue endpoint that scales"
            " on REQUEST_COUNT (remove it, or use scaler_type QUEUE_DELAY)"
        )
    return warnings
