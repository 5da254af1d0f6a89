"""A worker's spec as RunPod REST API v2 bodies, and what exists as the PATCH that fixes it.

The template (``POST /v2/templates``) holds the container: image, disk, env, registry credentials,
allowed CUDA versions (``serverless: true``, no SSH or Jupyter). The endpoint (``POST
/v2/serverless``, ``type: QUEUE``) is created from it (``templateId``: RunPod copies the container
settings, keeping no link) with the GPU pools and count, CUDA versions, workers, scaling, timeout,
FlashBoot, network volume and data centers. An existing object is compared field by field with
the spec, and the PATCH sends only the fields that differ (the endpoint's own copy of the
container included, so a new image rolls out). Every body is a model of :mod:`videokit.rest.models`.
A cached model (``weights: cached``) is in no v2 body: RunPod's OpenAPI document has no field
for it (only its CLI and console set it); :func:`cached_model_state` reads whether an existing
endpoint reports one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from videokit.deploy.spec import HF_MODEL_URL, DeployError, Stage, WorkerSpec
from videokit.errors import ConfigError
from videokit.rest import json_body
from videokit.rest.models import (
    CreateEndpointGpuConfig,
    CreateEndpointRequest,
    CreateTemplateRequest,
    Endpoint,
    EndpointWorkers,
    QueueDelayScaling,
    RequestCountScaling,
    Template,
    UpdateEndpointGpuConfig,
    UpdateEndpointRequest,
    UpdateTemplateRequest,
)

__all__ = [
    "Action",
    "CachedState",
    "Inventory",
    "Resource",
    "cached_model_state",
    "endpoint_body",
    "plan_endpoint",
    "plan_template",
    "template_body",
]

Action = Literal["create", "update", "unchanged", "create or update"]
#: Whether an endpoint caches the spec's model: it reports it (attached), another one (other),
#: none (absent), or nothing either way (unknown: not looked up, or no field in the answer).
CachedState = Literal["attached", "other", "absent", "unknown"]
B = TypeVar("B", bound=BaseModel)
_FB_SUFFIX = re.compile(r"\s*-fb$")
_COMMIT = re.compile(r"^[0-9a-fA-F]{40}$")

# v2 body field -> the spec field it comes from (named when RunPod's schema refuses a value).
_SPEC_FIELD = {
    "name": "name_prefix", "image": "image", "disk": "container_disk_gb", "env": "env",
    "registry": "registry_auth_id", "allowedCudaVersions": "allowed_cuda_versions",
    "gpu.pools": "gpus", "gpu.count": "gpu_count", "gpu.allowedCudaVersions":
    "allowed_cuda_versions", "workers.min": "workers_min", "workers.max": "workers_max",
    "workers.idleTimeout": "idle_timeout", "scaling": "scaler_type/scaler_value",
    "timeout": "execution_timeout", "networkVolumes": "network_volume_id",
    "dataCenterIds": "locations",
}  # fmt: skip


@dataclass
class Resource:
    """One template or endpoint: what deploy does with it and the v2 body it sends."""

    kind: Literal["template", "endpoint"]
    name: str
    action: Action
    body: BaseModel | None  # the POST body (create), the PATCH body (update), None (unchanged)
    existing_id: str | None = None
    changes: dict[str, Any] = field(default_factory=dict)  # v2 field -> its value before
    new_id: str | None = None

    @property
    def id(self) -> str | None:
        return self.new_id or self.existing_id

    @property
    def route(self) -> str:
        collection = "templates" if self.kind == "template" else "serverless"
        if self.action in ("create", "create or update"):
            return collection
        return f"{collection}/{self.existing_id}"

    @property
    def method(self) -> Literal["POST", "PATCH"]:
        return "POST" if self.action in ("create", "create or update") else "PATCH"


def _build(stage: Stage, model: type[B], fields: dict[str, Any]) -> B:
    """``fields`` as ``model``; a value the v2 schema refuses: a ConfigError naming the field."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error.get("loc", ()))
        spec_field = _SPEC_FIELD.get(where) or _SPEC_FIELD.get(where.split(".")[0], where)
        raise ConfigError(
            f"workers.{stage}.{spec_field}: RunPod's REST API v2 refuses it"
            f" ({model.__name__} {where or '(body)'}: {error.get('msg', 'invalid')})",
            hint="fix the field in the deploy spec (see examples/deploy.yaml)",
        ) from None


def template_body(stage: Stage, name: str, spec: WorkerSpec) -> CreateTemplateRequest:
    fields: dict[str, Any] = {
        "name": name,
        "image": spec.image,
        "disk": spec.container_disk_gb,
        "env": dict(spec.env),
        "serverless": True,
        "startSsh": False,
        "startJupyter": False,
    }
    if spec.registry_auth_id:
        fields["registry"] = spec.registry_auth_id
    if spec.allowed_cuda_versions:
        fields["allowedCudaVersions"] = list(spec.allowed_cuda_versions)
    return _build(stage, CreateTemplateRequest, fields)


def _workers(spec: WorkerSpec) -> dict[str, int]:
    workers = {"min": spec.workers_min, "max": spec.workers_max}
    if spec.scaler_type == "QUEUE_DELAY":  # RunPod rejects idleTimeout on requestCount
        workers["idleTimeout"] = spec.idle_timeout
    return workers


def _scaling(spec: WorkerSpec) -> dict[str, Any]:
    if spec.scaler_type == "QUEUE_DELAY":
        return {"type": "QUEUE_DELAY", "queueDelay": float(spec.scaler_value)}
    return {"type": "REQUEST_COUNT", "requestCount": spec.scaler_value}


def endpoint_body(
    stage: Stage, name: str, spec: WorkerSpec, template_id: str
) -> CreateEndpointRequest:
    gpu: dict[str, Any] = {"pools": list(spec.gpus), "count": spec.gpu_count}
    if spec.allowed_cuda_versions:
        gpu["allowedCudaVersions"] = list(spec.allowed_cuda_versions)
    fields: dict[str, Any] = {
        "name": name,
        "type": "QUEUE",
        "templateId": template_id,
        "gpu": _build(stage, CreateEndpointGpuConfig, gpu),
        "workers": _build(stage, EndpointWorkers, _workers(spec)),
        "scaling": _build(
            stage,
            QueueDelayScaling if spec.scaler_type == "QUEUE_DELAY" else RequestCountScaling,
            _scaling(spec),
        ),
        "timeout": spec.execution_timeout * 1000,
        "flashboot": "FLASHBOOT" if spec.flashboot else "OFF",
    }
    if spec.network_volume_id:
        fields["networkVolumes"] = [spec.network_volume_id]
    if spec.locations:
        fields["dataCenterIds"] = list(spec.locations)
    return _build(stage, CreateEndpointRequest, fields)


# -- what exists -----------------------------------------------------------------------------------


@dataclass
class Inventory:
    templates: list[Template]
    endpoints: list[Endpoint]

    def template(self, name: str) -> Template | None:
        found = [t for t in self.templates if t.name == name]
        if len(found) > 1:
            raise DeployError(
                f"{len(found)} templates are named {name!r} ({', '.join(t.id for t in found)})",
                hint="delete or rename the extra ones in the RunPod console, then deploy again",
            )
        if found and not found[0].serverless:
            raise DeployError(
                f"a pod (not serverless) template is named {name!r} ({found[0].id})",
                hint="rename it, or choose another name_prefix",
            )
        return found[0] if found else None

    def endpoint(self, name: str) -> Endpoint | None:
        found = [e for e in self.endpoints if _FB_SUFFIX.sub("", e.name) == name]
        if len(found) > 1:
            raise DeployError(
                f"{len(found)} endpoints are named {name!r} ({', '.join(e.id for e in found)})",
                hint="delete the extra ones in the RunPod console, then deploy again",
            )
        if found and (found[0].type == "LOAD_BALANCER" or found[0].gpu is None):
            raise DeployError(
                f"endpoint {name!r} ({found[0].id}) is a load-balancer or CPU endpoint, and its"
                " type cannot be changed",
                hint="delete or rename it in the RunPod console, or choose another name_prefix",
            )
        return found[0] if found else None


# -- what differs ----------------------------------------------------------------------------------


def _differ(changes: dict[str, Any], patch: dict[str, Any], key: str, old: Any, new: Any) -> None:
    if old != new:
        changes[key] = old
        patch[key] = new


def _same_set(old: Sequence[str] | None, new: Sequence[str] | None) -> bool:
    return set(old or []) == set(new or [])


def _container_patch(existing: Template | Endpoint, body: CreateTemplateRequest) -> tuple[
    dict[str, Any], dict[str, Any]
]:  # fmt: skip
    changes: dict[str, Any] = {}
    patch: dict[str, Any] = {}
    _differ(changes, patch, "image", existing.image, body.image)
    _differ(changes, patch, "disk", existing.disk, body.disk)
    _differ(changes, patch, "env", dict(existing.env or {}), body.env or {})
    _differ(changes, patch, "args", existing.args or "", "")
    _differ(changes, patch, "registry", existing.registry or None, body.registry)
    return changes, patch


def template_patch(stage: Stage, existing: Template, body: CreateTemplateRequest) -> Resource:
    changes, patch = _container_patch(existing, body)
    for flag in ("startSsh", "startJupyter"):
        _differ(changes, patch, flag, getattr(existing, flag), False)
    wanted = body.allowedCudaVersions or []
    if not _same_set(existing.allowedCudaVersions, wanted):
        changes["allowedCudaVersions"] = existing.allowedCudaVersions
        patch["allowedCudaVersions"] = wanted  # [] clears the constraint
    return _resource("template", existing.name, existing.id, changes, patch, stage)


def endpoint_patch(
    stage: Stage, existing: Endpoint, body: CreateEndpointRequest, template: CreateTemplateRequest
) -> Resource:
    changes, patch = _container_patch(existing, template)
    gpu_old, gpu_new = existing.gpu, body.gpu
    assert gpu_old is not None and gpu_new is not None  # Inventory.endpoint refuses CPU endpoints
    gpu: dict[str, Any] = {}
    if gpu_old.pools != gpu_new.pools or gpu_old.excludedTypes:
        changes["gpu.pools"] = gpu_old.pools
        gpu["pools"] = gpu_new.pools  # without excludedTypes: clears them
    if gpu_old.count != gpu_new.count:
        changes["gpu.count"] = gpu_old.count
        gpu["count"] = gpu_new.count
    if not _same_set(gpu_old.allowedCudaVersions, gpu_new.allowedCudaVersions):
        changes["gpu.allowedCudaVersions"] = gpu_old.allowedCudaVersions
        gpu["allowedCudaVersions"] = gpu_new.allowedCudaVersions or []
    if gpu_old.minCudaVersion:  # the spec has no floor; a floor beside a set is a 400
        changes["gpu.minCudaVersion"] = gpu_old.minCudaVersion
        gpu["minCudaVersion"] = ""
    if gpu:
        patch["gpu"] = gpu
    workers = _workers_of(body)
    old_workers = existing.workers.model_dump(include=set(workers))
    _differ(changes, patch, "workers", old_workers, workers)
    old_scaling = existing.scaling.model_dump(include={"type", "queueDelay", "requestCount"})
    _differ(changes, patch, "scaling", old_scaling, json_body(body.scaling))
    _differ(changes, patch, "timeout", existing.timeout, body.timeout)
    _differ(changes, patch, "flashboot", existing.flashboot, body.flashboot)
    _differ(changes, patch, "networkVolumes", existing.networkVolumes, body.networkVolumes or [])
    if not _same_set(existing.dataCenterIds, body.dataCenterIds):
        changes["dataCenterIds"] = existing.dataCenterIds
        patch["dataCenterIds"] = body.dataCenterIds or []
    return _resource("endpoint", body.name, existing.id, changes, patch, stage)


def _workers_of(body: CreateEndpointRequest) -> dict[str, Any]:
    assert body.workers is not None
    return json_body(body.workers)


def _resource(
    kind: Literal["template", "endpoint"],
    name: str,
    existing_id: str,
    changes: dict[str, Any],
    patch: dict[str, Any],
    stage: Stage,
) -> Resource:
    if not patch:
        return Resource(kind, name, "unchanged", None, existing_id=existing_id)
    model = UpdateTemplateRequest if kind == "template" else UpdateEndpointRequest
    if "gpu" in patch:
        patch["gpu"] = _build(stage, UpdateEndpointGpuConfig, patch["gpu"])
    return Resource(kind, name, "update", _build(stage, model, patch), existing_id, changes)


def plan_template(
    stage: Stage, body: CreateTemplateRequest, inventory: Inventory | None
) -> Resource:
    """Create, update (with only what differs) or leave alone; unknown without an inventory."""
    if inventory is None:
        return Resource("template", body.name, "create or update", body)
    existing = inventory.template(body.name)
    if existing is None:
        return Resource("template", body.name, "create", body)
    return template_patch(stage, existing, body)


def plan_endpoint(
    stage: Stage,
    body: CreateEndpointRequest,
    template: CreateTemplateRequest,
    inventory: Inventory | None,
) -> Resource:
    """:func:`plan_template` for the endpoint (its container compared with the template's body)."""
    if inventory is None:
        return Resource("endpoint", body.name, "create or update", body)
    existing = inventory.endpoint(body.name)
    if existing is None:
        return Resource("endpoint", body.name, "create", body)
    return endpoint_patch(stage, existing, body, template)


# -- the cached model ------------------------------------------------------------------------------


def _split_reference(reference: str) -> tuple[str, str]:
    """``https://huggingface.co/org/name:rev`` as (``org/name`` lower-cased, ``rev``)."""
    tail = reference.strip().removeprefix(HF_MODEL_URL)
    repo, colon, revision = tail.rpartition(":")
    if not colon:
        repo, revision = tail, ""
    return repo.strip("/").lower(), revision


def _same_model(seen: str, wanted: str) -> bool:
    repo, revision = _split_reference(wanted)
    seen_repo, seen_revision = _split_reference(seen)
    if seen_repo != repo:
        return False
    if _COMMIT.match(revision):  # a pinned commit must be that commit
        return seen_revision.lower() == revision.lower()
    return True  # a branch: RunPod keeps the commit it resolved it to


def cached_model_state(existing: Endpoint, reference: str) -> tuple[CachedState, list[str]]:
    """Whether ``existing`` caches ``reference``, and the model references it reports.

    RunPod's v2 document has no such field; an answer that carries ``modelReferences`` anyway
    (its CLI's name for them) is read, one without it is "unknown".
    """
    seen = (existing.model_extra or {}).get("modelReferences")
    if not isinstance(seen, list):
        return "unknown", []
    references = [str(item) for item in seen]
    if any(_same_model(item, reference) for item in references):
        return "attached", references
    return ("other" if references else "absent"), references
