"""``videokit deploy``: create or update the workers' RunPod templates and serverless endpoints.

A deploy spec (YAML, see ``examples/deploy.yaml``) names a prefix and, per worker (``edit``,
``animate``), the image, GPU pools, scaling, timeouts, FlashBoot, network volume, disk and env.
:func:`run_deploy` turns it into one serverless **template** and one **endpoint** per worker, both
called ``<prefix>-<worker>``:

* **Idempotent.** Existing templates and endpoints are found by name (RunPod may show a FlashBoot
  endpoint as ``name -fb``; that suffix is ignored) and updated in place (``saveTemplate`` /
  ``saveEndpoint`` with their ``id``), never duplicated; one whose fields already match is left
  alone. An endpoint is re-saved whenever its template changed, so its workers roll to the new
  image. Two objects with the same name are an error (videokit will not guess which is its own).
* **Escaped.** The SDK's ``create_template`` pastes env values into GraphQL unescaped (a quote or a
  backslash breaks the mutation, or changes it). Mutations here are built with :func:`gql_value`:
  strings are written with JSON string escaping, which is valid GraphQL string syntax, and object
  keys and enum values are checked names. They are sent through the SDK's own transport
  (``runpod.api.graphql.run_graphql_query``: its headers, its ``RUNPOD_API_BASE_URL`` override).
* **Dry run.** ``dry_run=True`` changes nothing. With an API key (and ``offline=False``) it reads
  the existing templates and endpoints (one read-only query) and prints exactly what it would
  create, update (with each changed field) or leave alone; without one it prints the full plan as
  "create or update". Every field that would be sent is printed.
* **Secrets.** The API key is never printed, nor put in an error. Env values whose name looks
  secret (``KEY``, ``TOKEN``, ``SECRET``, ``PASSWORD``...) are masked in the output, except RunPod
  secret references (``{{ RUNPOD_SECRET_name }}``, the recommended way to pass them).

It ends with the lines for ``.env``: ``VIDEOKIT_<WORKER>_ENDPOINT=<id>`` and
``VIDEOKIT_<WORKER>_GPU=<first pool>`` (the pool cost accounting prices jobs at).
"""

from __future__ import annotations

import difflib
import importlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

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
    "RUNPOD_CUDA_VERSIONS",
    "WORKER_CUDA",
    "DeployError",
    "DeployResult",
    "DeploySpec",
    "GqlEnum",
    "WorkerResult",
    "WorkerSpec",
    "cuda_versions_from",
    "gql_string",
    "gql_value",
    "load_spec",
    "run_deploy",
]

Stage = Literal["edit", "animate"]
STAGES: tuple[Stage, ...] = ("edit", "animate")

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
_GQL_NAME = re.compile(r"^[_A-Za-z][_0-9A-Za-z]*$")
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|PRIVATE", re.IGNORECASE)
_SECRET_REF = re.compile(r"^\{\{\s*RUNPOD_SECRET_[A-Za-z0-9_.-]+\s*\}\}$")
_FB_SUFFIX = re.compile(r"\s*-fb$")
_MASK = "******** (secret, not shown)"


class DeployError(VideoKitError):
    """RunPod refused or failed a request, or its state is ambiguous (duplicate names)."""


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
        return DeploySpec.model_validate(document)
    except ValidationError as exc:
        problems = [_problem(error) for error in exc.errors()]
        head = (
            "invalid deploy spec"
            if len(problems) == 1
            else f"invalid deploy spec ({len(problems)} problems)"
        )
        raise ConfigError(
            f"{path}: {head}:\n" + "\n".join(f"- {p}" for p in problems),
            hint="see examples/deploy.yaml for every field, with comments",
        ) from None


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
    elif kind == "literal_error" and tuple(error.get("loc", ()))[-1:] == ("[key]",):
        message = f"unknown worker (the workers are: {', '.join(STAGES)})"
    return f"{where}: {message}"


_FIELDS: dict[str, list[str]] = {stage: list(WorkerSpec.model_fields) for stage in STAGES}
_FIELDS[""] = list(DeploySpec.model_fields)


# -- GraphQL literals ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GqlEnum:
    """An enum value, written bare (``flashBootType: FLASHBOOT``)."""

    name: str

    def __post_init__(self) -> None:
        if not _GQL_NAME.match(self.name) or self.name in ("true", "false", "null"):
            raise ValueError(f"{self.name!r} is not a GraphQL enum value")


def gql_string(value: str) -> str:
    """A GraphQL string literal for ``value``.

    JSON's string escaping is a subset of GraphQL's (``\\"`` ``\\\\`` ``\\/`` ``\\b`` ``\\f``
    ``\\n`` ``\\r`` ``\\t`` ``\\uXXXX``): every control character is escaped, and every other
    character, ``$``, braces and non-ASCII text included, stands for itself inside the quotes.
    """
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in value):
        raise ValueError("a string with a lone surrogate cannot be sent")
    return json.dumps(value, ensure_ascii=False)


def gql_value(value: object) -> str:
    """A GraphQL input literal: str, int, bool, None, :class:`GqlEnum`, lists and dicts of them."""
    if isinstance(value, GqlEnum):
        return value.name
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return gql_string(value)
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(gql_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        fields = []
        for key, item in value.items():
            if not isinstance(key, str) or not _GQL_NAME.match(key):
                raise ValueError(f"{key!r} is not a GraphQL field name")
            fields.append(f"{key}: {gql_value(item)}")
        return "{" + ", ".join(fields) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as a GraphQL literal")


INVENTORY_QUERY = (
    "query { myself { "
    "podTemplates { id name imageName isServerless containerDiskInGb volumeInGb dockerArgs"
    " containerRegistryAuthId env { key value } } "
    "endpoints { id name templateId gpuIds gpuCount networkVolumeId locations idleTimeout"
    " scalerType scalerValue workersMin workersMax executionTimeoutMs flashBootType"
    " allowedCudaVersions } "
    "} }"
)


def save_template_mutation(fields: Mapping[str, object], template_id: str | None = None) -> str:
    data = {"id": template_id, **fields} if template_id else dict(fields)
    return f"mutation {{ saveTemplate(input: {gql_value(data)}) {{ id name imageName }} }}"


def save_endpoint_mutation(fields: Mapping[str, object], endpoint_id: str | None = None) -> str:
    data = {"id": endpoint_id, **fields} if endpoint_id else dict(fields)
    return f"mutation {{ saveEndpoint(input: {gql_value(data)}) {{ id name templateId }} }}"


# -- transport -------------------------------------------------------------------------------------

#: ``(query, api_key) -> the response document`` (``{"data": ...}``).
Transport = Callable[[str, str], Mapping[str, Any]]


def sdk_transport() -> Transport:
    """The runpod SDK's GraphQL transport, with its errors turned into :class:`DeployError`.

    The SDK's ``QueryError`` carries the query (and so every env value): only its message is kept.
    """
    try:
        graphql = importlib.import_module("runpod.api.graphql")
        sdk_errors = importlib.import_module("runpod.error")
    except ImportError:
        raise ConfigError(
            "videokit deploy needs the runpod SDK, a dependency of videokit that is missing",
            hint="reinstall videokit (pip install --force-reinstall videokit)",
        ) from None
    run_query: Callable[..., Mapping[str, Any]] = graphql.run_graphql_query
    auth_error: type[BaseException] = sdk_errors.AuthenticationError
    query_error: type[BaseException] = sdk_errors.QueryError

    def send(query: str, api_key: str) -> Mapping[str, Any]:
        try:
            return run_query(query, api_key=api_key)
        except auth_error:
            raise DeployError(
                "RunPod refused the API key (401 Unauthorized)",
                hint="check RUNPOD_API_KEY (a key with read/write access to serverless)",
            ) from None
        except query_error as exc:
            message = getattr(exc, "message", None) or "unknown error"
            raise DeployError(f"the RunPod API refused the request: {message}") from None
        except ValueError:
            raise DeployError("the RunPod API answered with something that is not JSON") from None
        except OSError as exc:  # requests' errors are OSErrors
            raise DeployError(
                f"cannot reach the RunPod API ({type(exc).__name__})",
                hint="check the network, or RUNPOD_API_BASE_URL if you set it",
            ) from None

    return send


class _Api:
    def __init__(self, transport: Transport, api_key: str, secrets: Iterable[str]) -> None:
        self._transport, self._api_key = transport, api_key
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def call(self, query: str) -> Mapping[str, Any]:
        try:
            document = self._transport(query, self._api_key)
        except VideoKitError as exc:
            raise DeployError(self._redact(exc.message), hint=exc.hint) from None
        data = document.get("data") if isinstance(document, Mapping) else None
        if not isinstance(data, Mapping):
            raise DeployError("the RunPod API answered without data")
        return data

    def _redact(self, text: str) -> str:
        for secret in [self._api_key, *self._secrets]:
            if secret:
                text = text.replace(secret, "***")
        return text


# -- planning --------------------------------------------------------------------------------------

Action = Literal["create", "update", "unchanged", "create or update"]


@dataclass
class _Resource:
    kind: Literal["template", "endpoint"]
    name: str
    action: Action
    fields: dict[str, object]
    existing_id: str | None = None
    changes: dict[str, object] = field(default_factory=dict)  # field -> old value
    new_id: str | None = None

    @property
    def id(self) -> str | None:
        return self.new_id or self.existing_id


@dataclass
class _WorkerPlan:
    stage: Stage
    spec: WorkerSpec
    template: _Resource
    endpoint: _Resource
    warnings: list[str]


@dataclass(frozen=True)
class WorkerResult:
    stage: Stage
    template_name: str
    template_id: str | None
    template_action: str
    endpoint_name: str
    endpoint_id: str | None
    endpoint_action: str
    gpu: str


@dataclass(frozen=True)
class DeployResult:
    dry_run: bool
    workers: dict[Stage, WorkerResult]
    env_lines: list[str]


@dataclass
class _Inventory:
    templates: list[Mapping[str, Any]]
    endpoints: list[Mapping[str, Any]]

    def template(self, name: str) -> Mapping[str, Any] | None:
        found = [t for t in self.templates if t.get("name") == name]
        if len(found) > 1:
            ids = ", ".join(str(t.get("id")) for t in found)
            raise DeployError(
                f"{len(found)} templates are named {name!r} ({ids})",
                hint="delete or rename the extra ones in the RunPod console, then deploy again",
            )
        if found and found[0].get("isServerless") is False:
            raise DeployError(
                f"a pod (not serverless) template is named {name!r}",
                hint="rename it, or choose another name_prefix",
            )
        return found[0] if found else None

    def endpoint(self, name: str) -> Mapping[str, Any] | None:
        found = [e for e in self.endpoints if _FB_SUFFIX.sub("", str(e.get("name", ""))) == name]
        if len(found) > 1:
            ids = ", ".join(str(e.get("id")) for e in found)
            raise DeployError(
                f"{len(found)} endpoints are named {name!r} ({ids})",
                hint="delete the extra ones in the RunPod console, then deploy again",
            )
        return found[0] if found else None


def _inventory(api: _Api) -> _Inventory:
    data = api.call(INVENTORY_QUERY)
    myself = data.get("myself")
    if not isinstance(myself, Mapping):
        raise DeployError("the RunPod API answered without 'myself' (is the key valid?)")
    templates = myself.get("podTemplates") or []
    endpoints = myself.get("endpoints") or []
    return _Inventory(
        templates=[t for t in templates if isinstance(t, Mapping)],
        endpoints=[e for e in endpoints if isinstance(e, Mapping)],
    )


def _template_fields(name: str, spec: WorkerSpec) -> dict[str, object]:
    return {
        "name": name,
        "imageName": spec.image,
        "containerDiskInGb": spec.container_disk_gb,
        "volumeInGb": 0,
        "dockerArgs": "",
        "isServerless": True,
        "containerRegistryAuthId": spec.registry_auth_id or "",
        "env": [{"key": key, "value": value} for key, value in spec.env.items()],
    }


def _endpoint_fields(name: str, spec: WorkerSpec, template_id: str) -> dict[str, object]:
    fields: dict[str, object] = {
        "name": name,
        "templateId": template_id,
        "gpuIds": ",".join(spec.gpus),
        "gpuCount": spec.gpu_count,
        "workersMin": spec.workers_min,
        "workersMax": spec.workers_max,
        "idleTimeout": spec.idle_timeout,
        "executionTimeoutMs": spec.execution_timeout * 1000,
        "scalerType": spec.scaler_type,
        "scalerValue": spec.scaler_value,
        "flashBootType": GqlEnum("FLASHBOOT" if spec.flashboot else "OFF"),
        "networkVolumeId": spec.network_volume_id or "",
        "locations": ",".join(spec.locations),
    }
    # Sent only when set: RunPod has no documented "any version" value for it.
    if spec.allowed_cuda_versions:
        fields["allowedCudaVersions"] = ",".join(spec.allowed_cuda_versions)
    return fields


def _env_dict(items: object) -> dict[str, str]:
    if not isinstance(items, list):
        return {}
    return {
        str(item.get("key")): str(item.get("value")) for item in items if isinstance(item, Mapping)
    }


def _csv(value: object) -> list[str]:
    return [part.strip() for part in str(value or "").split(",") if part.strip()]


def _template_changes(
    existing: Mapping[str, Any], fields: Mapping[str, object]
) -> dict[str, object]:
    changes: dict[str, object] = {}
    for key in ("imageName", "containerDiskInGb", "volumeInGb", "isServerless"):
        if existing.get(key) != fields[key]:
            changes[key] = existing.get(key)
    for key in ("dockerArgs", "containerRegistryAuthId"):
        if (existing.get(key) or "") != fields[key]:
            changes[key] = existing.get(key)
    old_env = _env_dict(existing.get("env") or [])
    new_env = _env_dict(fields["env"])
    if old_env != new_env:
        changes["env"] = old_env
    return changes


def _endpoint_changes(
    existing: Mapping[str, Any], fields: Mapping[str, object]
) -> dict[str, object]:
    changes: dict[str, object] = {}
    for key in (
        "templateId",
        "gpuCount",
        "workersMin",
        "workersMax",
        "idleTimeout",
        "executionTimeoutMs",
        "scalerType",
        "scalerValue",
    ):
        if existing.get(key) != fields[key]:
            changes[key] = existing.get(key)
    if _csv(existing.get("gpuIds")) != _csv(fields["gpuIds"]):
        changes["gpuIds"] = existing.get("gpuIds")
    flashboot = fields["flashBootType"]
    assert isinstance(flashboot, GqlEnum)
    if (existing.get("flashBootType") or "OFF") != flashboot.name:
        changes["flashBootType"] = existing.get("flashBootType")
    for key in ("networkVolumeId", "locations"):
        if (existing.get(key) or "") != fields[key]:
            changes[key] = existing.get(key)
    if "allowedCudaVersions" in fields and set(_csv(existing.get("allowedCudaVersions"))) != set(
        _csv(fields["allowedCudaVersions"])
    ):
        changes["allowedCudaVersions"] = existing.get("allowedCudaVersions")
    return changes


def _plan_worker(
    prefix: str, stage: Stage, spec: WorkerSpec, inventory: _Inventory | None
) -> _WorkerPlan:
    name = f"{prefix}-{stage}"
    template_fields = _template_fields(name, spec)
    if inventory is None:
        template = _Resource("template", name, "create or update", template_fields)
    else:
        existing_template = inventory.template(name)
        if existing_template is None:
            template = _Resource("template", name, "create", template_fields)
        else:
            changes = _template_changes(existing_template, template_fields)
            template = _Resource(
                "template",
                name,
                "update" if changes else "unchanged",
                template_fields,
                existing_id=str(existing_template["id"]),
                changes=changes,
            )
    template_ref = template.existing_id or f"<id of template {name}>"
    endpoint_fields = _endpoint_fields(name, spec, template_ref)
    if inventory is None:
        endpoint = _Resource("endpoint", name, "create or update", endpoint_fields)
    else:
        existing_endpoint = inventory.endpoint(name)
        if existing_endpoint is None:
            endpoint = _Resource("endpoint", name, "create", endpoint_fields)
        else:
            changes = _endpoint_changes(existing_endpoint, endpoint_fields)
            rolled = template.action in ("create", "update")
            endpoint = _Resource(
                "endpoint",
                name,
                "update" if changes or rolled else "unchanged",
                endpoint_fields,
                existing_id=str(existing_endpoint["id"]),
                changes=changes,
            )
    return _WorkerPlan(stage, spec, template, endpoint, _warnings(stage, spec))


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


def _warnings(stage: Stage, spec: WorkerSpec) -> list[str]:
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
    if spec.network_volume_id is None:
        warnings.append(
            "no network_volume_id: the image must have the weights baked in (BAKE_MODELS=1)"
        )
    if spec.workers_min > 0:
        warnings.append(
            f"workers_min={spec.workers_min}: always-on workers are billed even when idle"
        )
    if spec.workers_max == 0:
        warnings.append("workers_max=0: the endpoint will run no jobs")
    return warnings


# -- output ----------------------------------------------------------------------------------------


def _secret_key(key: str) -> bool:
    return bool(_SECRET_NAME.search(key))


def _show_env_value(key: str, value: str) -> str:
    if _secret_key(key) and not _SECRET_REF.match(value.strip()):
        return _MASK
    return gql_string(value)


def _show(key: str, value: object) -> str:
    if key == "templateId" and isinstance(value, str) and value.startswith("<"):
        return value
    return gql_value(value)


def _print_resource(resource: _Resource, out: TextIO, *, done: bool) -> None:
    header = f"  {resource.kind} {resource.name}: {resource.action}"
    if resource.id and resource.action != "create":
        header += f" (id {resource.id})"
    if done and resource.action == "create" and resource.new_id:
        header += f" -> id {resource.new_id}"
    print(header, file=out)
    for key, value in resource.fields.items():
        if key == "env":
            _print_env(value, resource.changes.get("env"), out)
            continue
        was = ""
        if key in resource.changes:
            old = resource.changes[key]
            was = f"   (was {gql_value(old) if old is not None else 'unset'})"
        print(f"    {key}: {_show(key, value)}{was}", file=out)


def _print_env(value: object, old: object, out: TextIO) -> None:
    new_env = _env_dict(value)
    old_env = old if isinstance(old, dict) else None
    print(f"    env:{' []' if not new_env else ''}", file=out)
    for key, item in new_env.items():
        note = ""
        if old_env is not None and key not in old_env:
            note = "   (new)"
        elif old_env is not None and old_env[key] != item:
            note = "   (changed)"
        print(f"      {key} = {_show_env_value(key, item)}{note}", file=out)
    for gone in sorted(set(old_env or {}) - set(new_env)):
        print(f"      {gone}   (removed)", file=out)


def _env_lines(plans: list[_WorkerPlan]) -> list[str]:
    lines = []
    for plan in plans:
        endpoint_id = plan.endpoint.id or f"<id of endpoint {plan.endpoint.name}>"
        upper = plan.stage.upper()
        lines.append(f"VIDEOKIT_{upper}_ENDPOINT={endpoint_id}")
        lines.append(f"VIDEOKIT_{upper}_GPU={plan.spec.gpus[0]}")
    return lines


# -- the command -----------------------------------------------------------------------------------


def run_deploy(
    spec_path: Path | str,
    *,
    dry_run: bool,
    api_key: str | None,
    out: TextIO,
    offline: bool = False,
    transport: Transport | None = None,
) -> DeployResult:
    """Deploy (or, with ``dry_run``, plan) the workers of the spec at ``spec_path``.

    ``api_key``: the RunPod API key (required unless ``dry_run``); never printed. ``offline``: a
    dry run that does not even read what exists. ``transport``: how GraphQL is sent (default: the
    runpod SDK's; its base URL is ``RUNPOD_API_BASE_URL``, default https://api.runpod.io).
    Raises :class:`~videokit.errors.ConfigError` for a bad spec or a missing key,
    :class:`DeployError` when RunPod refuses a request; what was done before that stays done, and
    running the same command again finishes the job (it is idempotent).
    """
    spec = load_spec(spec_path)
    key = (api_key or "").strip() or None
    if not dry_run and key is None:
        raise ConfigError(
            "RUNPOD_API_KEY is not set: deploying needs a RunPod API key",
            hint="export RUNPOD_API_KEY=... (or put it in .env); --dry-run works without it",
        )
    lookup = key is not None and not (dry_run and offline)
    api: _Api | None = None
    if lookup:
        assert key is not None
        secrets = [v for w in spec.workers.values() for k, v in w.env.items() if _secret_key(k)]
        api = _Api(transport or sdk_transport(), key, secrets)
    inventory = _inventory(api) if api is not None else None

    stages = [stage for stage in STAGES if stage in spec.workers]
    plans = [_plan_worker(spec.name_prefix, s, spec.workers[s], inventory) for s in stages]

    if dry_run:
        print(f"videokit deploy {spec_path}: dry run, nothing is changed on RunPod", file=out)
        if inventory is None:
            print(
                "(existing templates and endpoints were not looked up: each is created, or"
                " updated in place if one with its name exists)",
                file=out,
            )
        else:
            print("(existing templates and endpoints were looked up, read-only)", file=out)
    else:
        print(f"videokit deploy {spec_path}", file=out)

    for plan in plans:
        print(f"\n{plan.stage} worker", file=out)
        if not dry_run:
            assert api is not None
            _apply(api, plan)
        _print_resource(plan.template, out, done=not dry_run)
        _print_resource(plan.endpoint, out, done=not dry_run)
        for warning in plan.warnings:
            print(f"  warning: {warning}", file=out)

    env_lines = _env_lines(plans)
    if dry_run:
        print("\n.env lines (endpoint ids are known once deployed):", file=out)
    else:
        print("\nendpoints:", file=out)
        for plan in plans:
            print(f"  {plan.stage:8} {plan.endpoint.id}", file=out)
        print("\nput these lines in .env (or export them):", file=out)
    for line in env_lines:
        print(line, file=out)

    return DeployResult(
        dry_run=dry_run,
        workers={
            plan.stage: WorkerResult(
                stage=plan.stage,
                template_name=plan.template.name,
                template_id=plan.template.id,
                template_action=plan.template.action,
                endpoint_name=plan.endpoint.name,
                endpoint_id=plan.endpoint.id,
                endpoint_action=plan.endpoint.action,
                gpu=plan.spec.gpus[0],
            )
            for plan in plans
        },
        env_lines=env_lines,
    )


def _apply(api: _Api, plan: _WorkerPlan) -> None:
    template = plan.template
    if template.action in ("create", "update"):
        data = api.call(save_template_mutation(template.fields, template.existing_id))
        template.new_id = _saved_id(data, "saveTemplate", template)
    endpoint = plan.endpoint
    assert template.id is not None
    endpoint.fields["templateId"] = template.id
    if endpoint.action in ("create", "update"):
        data = api.call(save_endpoint_mutation(endpoint.fields, endpoint.existing_id))
        endpoint.new_id = _saved_id(data, "saveEndpoint", endpoint)


def _saved_id(data: Mapping[str, Any], operation: str, resource: _Resource) -> str:
    saved = data.get(operation)
    identifier = saved.get("id") if isinstance(saved, Mapping) else None
    if not isinstance(identifier, str) or not identifier:
        raise DeployError(f"RunPod did not return an id for {resource.kind} {resource.name!r}")
    if resource.existing_id and identifier != resource.existing_id:
        raise DeployError(
            f"RunPod saved {resource.kind} {resource.name!r} as {identifier}, not as the existing"
            f" {resource.existing_id}: check the console for a duplicate"
        )
    return identifier
