"""``videokit deploy``: create or update the workers' RunPod templates and serverless endpoints.

:func:`run_deploy` turns a spec (:mod:`videokit.deploy.spec`) into one template and one endpoint
per worker, both called ``<prefix>-<worker>``, through RunPod's REST API v2 (:mod:`videokit.rest`):
* **Idempotent.** ``GET /v2/templates`` and ``GET /v2/serverless`` find them by name (a `` -fb``
  suffix is ignored); a missing one is created (POST), an existing one PATCHed with only the
  fields that differ, or left alone. Two objects with the same name are an error.
* **Dry run.** Changes nothing; with a key (and not ``offline``) it only GETs, then prints the
  exact requests it would send (method, path, JSON body); without one, every POST body.
* **Secrets.** The API key is never printed nor put in an error; env values whose name looks
  secret are masked, except RunPod secret references (``{{ RUNPOD_SECRET_name }}``).
* **Cached models.** RunPod's REST API v2 has no field for an endpoint's cached model; for a
  worker with ``weights: cached`` deploy prints the one command that attaches it (RunPod's CLI,
  ``runpodctl serverless update <id> --model-reference https://huggingface.co/<org>/<name>:<rev>``)
  until the endpoint reports it.
It ends with the ``.env`` lines: ``VIDEOKIT_<WORKER>_ENDPOINT=<id>``, ``VIDEOKIT_<WORKER>_GPU=``.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx

from videokit.deploy.plan import (
    CachedState,
    Inventory,
    Resource,
    cached_model_state,
    endpoint_body,
    plan_endpoint,
    plan_template,
    template_body,
)
from videokit.deploy.spec import (
    GPU_POOLS,
    MODEL_REPOS,
    MODEL_VRAM_GB,
    RUNPOD_CUDA_VERSIONS,
    STAGES,
    WORKER_CUDA,
    DeployError,
    DeploySpec,
    Stage,
    WorkerSpec,
    cuda_versions_from,
    load_spec,
    model_reference,
    warnings_for,
)
from videokit.errors import ConfigError
from videokit.rest import DEFAULT_REST_URL, RestError, RunPodRest, json_body
from videokit.rest.models import (
    CreateEndpointRequest,
    CreateTemplateRequest,
    UpdateEndpointRequest,
    UpdateTemplateRequest,
)

__all__ = [
    "GPU_POOLS",
    "MODEL_REPOS",
    "MODEL_VRAM_GB",
    "RUNPOD_CUDA_VERSIONS",
    "WORKER_CUDA",
    "DeployError",
    "DeployResult",
    "DeploySpec",
    "WorkerResult",
    "WorkerSpec",
    "cuda_versions_from",
    "load_spec",
    "model_reference",
    "run_deploy",
]

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|PRIVATE", re.IGNORECASE)
_SECRET_REF = re.compile(r"^\{\{\s*RUNPOD_SECRET_[A-Za-z0-9_.-]+\s*\}\}$")
MASK = "******** (secret, not shown)"


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
    #: ``weights: cached``: the model reference RunPod caches for the endpoint, and whether the
    #: endpoint reports it (CachedState; None when the worker has no cached model).
    cached_model: str | None = None
    cached_model_state: CachedState | None = None


@dataclass(frozen=True)
class DeployResult:
    dry_run: bool
    workers: dict[Stage, WorkerResult]
    env_lines: list[str]


@dataclass
class _Worker:
    stage: Stage
    spec: WorkerSpec
    template_body: CreateTemplateRequest
    endpoint_body: CreateEndpointRequest
    template: Resource | None = None
    endpoint: Resource | None = None
    cached_model: str | None = None  # the model reference (weights: cached)
    cached_state: CachedState = "unknown"
    cached_seen: tuple[str, ...] = ()  # the references the existing endpoint reports
    cached_looked_up: bool = False


def _secret_key(key: str) -> bool:
    return bool(_SECRET_NAME.search(key))


def run_deploy(
    spec_path: Path | str,
    *,
    dry_run: bool,
    api_key: str | None,
    out: TextIO,
    offline: bool = False,
    base_url: str = DEFAULT_REST_URL,
    allow_key_to_any_host: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
    read_deadline_s: float = 60.0,
) -> DeployResult:
    """Deploy (or, with ``dry_run``, plan) the workers of the spec at ``spec_path``.

    ``api_key``: RunPod's API key (required unless ``dry_run``); never printed. ``offline``: a dry
    run that sends nothing at all. ``base_url``: the REST API (tests, proxies); the key goes to a
    host other than RunPod's only with ``allow_key_to_any_host``; reads are retried for up to
    ``read_deadline_s``. Raises ConfigError for a bad
    spec or a missing key (before any request), DeployError when RunPod refuses a request; what
    was done before stays done, and running the same command again finishes the job.
    """
    spec = load_spec(spec_path)
    key = (api_key or "").strip() or None
    if not dry_run and key is None:
        raise ConfigError(
            "RUNPOD_API_KEY is not set: deploying needs a RunPod API key",
            hint="export RUNPOD_API_KEY=... (or put it in .env); --dry-run works without it",
        )
    workers = []
    for stage in (s for s in STAGES if s in spec.workers):
        name, worker = f"{spec.name_prefix}-{stage}", spec.workers[stage]
        template = template_body(stage, name, worker)
        endpoint = endpoint_body(stage, name, worker, f"<id of template {name}>")
        workers.append(
            _Worker(stage, worker, template, endpoint, cached_model=model_reference(worker))
        )
    secrets = [v for w in spec.workers.values() for k, v in w.env.items() if _secret_key(k)]
    client = None
    if key is not None and not (dry_run and offline):
        client = RunPodRest(
            key,
            base_url=base_url,
            allow_key_to_any_host=allow_key_to_any_host,
            secrets=secrets,
            transport=transport,
            read_deadline_s=read_deadline_s,
        )
    prefix = httpx.URL(base_url).path.rstrip("/")
    try:
        return asyncio.run(_deploy(spec_path, workers, client, dry_run, prefix, out))
    except RestError as exc:
        raise DeployError(exc.message, hint=exc.hint) from None


async def _deploy(
    spec_path: Path | str,
    workers: list[_Worker],
    client: RunPodRest | None,
    dry_run: bool,
    prefix: str,
    out: TextIO,
) -> DeployResult:
    inventory = None
    if client is not None:
        async with client:
            inventory = Inventory(await client.list_templates(), await client.list_endpoints())
            _plan(workers, inventory)
            _header(spec_path, dry_run, inventory is not None, prefix, out)
            for worker in workers:
                if not dry_run:
                    await _apply(client, worker)
                _print_worker(worker, prefix, out, done=not dry_run)
    else:
        _plan(workers, None)
        _header(spec_path, dry_run, False, prefix, out)
        for worker in workers:
            _print_worker(worker, prefix, out, done=False)
    return _finish(workers, dry_run, out)


def _plan(workers: list[_Worker], inventory: Inventory | None) -> None:
    for w in workers:
        w.template = plan_template(w.stage, w.template_body, inventory)
        w.endpoint = plan_endpoint(w.stage, w.endpoint_body, w.template_body, inventory)
        if w.template.existing_id and w.endpoint.action in ("create", "create or update"):
            w.endpoint.body = w.endpoint_body.model_copy(
                update={"templateId": w.template.existing_id}
            )
        if w.cached_model and inventory is not None:
            w.cached_looked_up = True
            existing = inventory.endpoint(w.endpoint.name)
            if existing is None:
                w.cached_state = "absent"  # it is created without one: the v2 body has no field
            else:
                w.cached_state, seen = cached_model_state(existing, w.cached_model)
                w.cached_seen = tuple(seen)


async def _apply(client: RunPodRest, worker: _Worker) -> None:
    template, endpoint = worker.template, worker.endpoint
    assert template is not None and endpoint is not None
    if template.action == "create":
        assert isinstance(template.body, CreateTemplateRequest)
        template.new_id = (await client.create_template(template.body)).id
    elif template.action == "update" and template.existing_id:
        assert isinstance(template.body, UpdateTemplateRequest)
        await client.update_template(template.existing_id, template.body)
    if endpoint.action == "create":
        assert isinstance(endpoint.body, CreateEndpointRequest) and template.id is not None
        endpoint.body = endpoint.body.model_copy(update={"templateId": template.id})
        endpoint.new_id = (await client.create_endpoint(endpoint.body)).id
    elif endpoint.action == "update" and endpoint.existing_id:
        assert isinstance(endpoint.body, UpdateEndpointRequest)
        await client.update_endpoint(endpoint.existing_id, endpoint.body)


# -- output ----------------------------------------------------------------------------------------


def _header(
    spec_path: Path | str, dry_run: bool, looked_up: bool, prefix: str, out: TextIO
) -> None:
    if not dry_run:
        print(f"videokit deploy {spec_path} (RunPod REST API v2)", file=out)
        return
    print(f"videokit deploy {spec_path}: dry run, nothing is changed on RunPod", file=out)
    if looked_up:
        print(
            f"(existing templates and endpoints were looked up, read-only: GET {prefix}/templates,"
            f" GET {prefix}/serverless)",
            file=out,
        )
    else:
        print(
            "(existing templates and endpoints were not looked up: each is created, or PATCHed"
            " with the fields that differ if one with its name exists)",
            file=out,
        )


def _masked(body: dict[str, Any]) -> dict[str, Any]:
    env = body.get("env")
    if isinstance(env, dict):
        body["env"] = {
            k: MASK if _secret_key(k) and not _SECRET_REF.match(v.strip()) else v
            for k, v in env.items()
        }
    return body


def _print_resource(resource: Resource, prefix: str, out: TextIO, *, done: bool) -> None:
    header = f"  {resource.kind} {resource.name}: {resource.action}"
    if resource.existing_id:
        header += f" (id {resource.existing_id})"
    if done and resource.new_id:
        header += f" -> id {resource.new_id}"
    print(header, file=out)
    if resource.body is None:
        return
    print(f"    {resource.method} {prefix}/{resource.route}", file=out)
    text = json.dumps(_masked(json_body(resource.body)), indent=2, ensure_ascii=False)
    for line in text.splitlines():
        print(f"      {line}", file=out)
    for key, old in resource.changes.items():
        if key == "env" and isinstance(old, dict):
            _print_env_changes(old, json_body(resource.body).get("env") or {}, out)
        else:
            print(f"    was {key}: {json.dumps(old, ensure_ascii=False)}", file=out)


def _print_env_changes(old: dict[str, str], new: dict[str, str], out: TextIO) -> None:
    for key in sorted(set(old) | set(new)):
        if key not in old:
            print(f"    env {key}: new", file=out)
        elif key not in new:
            print(f"    env {key}: removed", file=out)
        elif old[key] != new[key]:
            print(f"    env {key}: changed", file=out)


def _print_worker(worker: _Worker, prefix: str, out: TextIO, *, done: bool) -> None:
    assert worker.template is not None and worker.endpoint is not None
    print(f"\n{worker.stage} worker", file=out)
    _print_resource(worker.template, prefix, out, done=done)
    _print_resource(worker.endpoint, prefix, out, done=done)
    _print_cached_model(worker, out)
    for warning in warnings_for(worker.stage, worker.spec):
        print(f"  warning: {warning}", file=out)


def _print_cached_model(worker: _Worker, out: TextIO) -> None:
    """The cached model's state, and while it is not attached, the command that attaches it."""
    reference = worker.cached_model
    if reference is None:
        return
    assert worker.endpoint is not None
    state = worker.cached_state
    said = _CACHED_SAID[state]
    if state == "unknown" and not worker.cached_looked_up:
        said = "attach it once the endpoint exists (not looked up)"
    print(f"  cached model {reference}: {said}", file=out)
    if worker.cached_seen:
        print(f"    the endpoint reports: {', '.join(worker.cached_seen)}", file=out)
    if state == "attached":
        return
    endpoint_id = worker.endpoint.id or f"<id of endpoint {worker.endpoint.name}>"
    print(
        "    RunPod's REST API v2 has no field for it: attach it once with RunPod's CLI (or in"
        " the console: Manage > Edit Endpoint > Model):",
        file=out,
    )
    print(
        f"      runpodctl serverless update {endpoint_id} --model-reference {reference}", file=out
    )
    print(
        "    then run this deploy again: it PATCHes back any field that the update reset"
        " (the CLI saves the whole endpoint)",
        file=out,
    )


_CACHED_SAID: dict[CachedState, str] = {
    "attached": "attached",
    "other": "action needed: the endpoint caches another model",
    "absent": "action needed: not attached yet",
    "unknown": "action needed unless it is attached already (RunPod's v2 answer does not say)",
}


def _finish(workers: list[_Worker], dry_run: bool, out: TextIO) -> DeployResult:
    lines: list[str] = []
    results: dict[Stage, WorkerResult] = {}
    for w in workers:
        assert w.template is not None and w.endpoint is not None
        upper = w.stage.upper()
        lines.append(
            f"VIDEOKIT_{upper}_ENDPOINT={w.endpoint.id or f'<id of endpoint {w.endpoint.name}>'}"
        )
        lines.append(f"VIDEOKIT_{upper}_GPU={w.spec.gpus[0]}")
        results[w.stage] = WorkerResult(
            stage=w.stage,
            template_name=w.template.name,
            template_id=w.template.id,
            template_action=w.template.action,
            endpoint_name=w.endpoint.name,
            endpoint_id=w.endpoint.id,
            endpoint_action=w.endpoint.action,
            gpu=w.spec.gpus[0],
            cached_model=w.cached_model,
            cached_model_state=w.cached_state if w.cached_model else None,
        )
    if dry_run:
        print("\n.env lines (endpoint ids are known once deployed):", file=out)
    else:
        print("\nendpoints:", file=out)
        for w in workers:
            assert w.endpoint is not None
            print(f"  {w.stage:8} {w.endpoint.id}", file=out)
        print("\nput these lines in .env (or export them):", file=out)
    for line in lines:
        print(line, file=out)
    return DeployResult(dry_run=dry_run, workers=results, env_lines=lines)
