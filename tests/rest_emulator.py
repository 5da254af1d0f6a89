"""A loopback emulator of RunPod's REST API v2 routes that ``videokit deploy`` uses, for tests.

Real HTTP on 127.0.0.1 (``videokit.serve.app.running_server``): ``GET``/``POST /v2/templates``,
``GET``/``PATCH /v2/templates/{id}``, the same for ``/v2/serverless``. Objects live in memory.
Every request body is validated against :mod:`videokit.rest.models` (the models written from
RunPod's OpenAPI document): one that does not validate is answered 400 *and* recorded in
``invalid``, which the tests assert is empty. Every answer is checked against the response models
too. Behaviour follows the document: a create from ``templateId`` copies the template's container
settings (and seeds ``gpu.allowedCudaVersions``), a PATCH changes only the fields sent (``env``
replaced whole, ``gpu.pools`` without ``excludedTypes`` clears them), a non-empty
``allowedCudaVersions`` beside a ``minCudaVersion`` is a 400, a pod template behind an endpoint a
422. ``fail()`` makes the next matching requests fail with a given status.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from videokit.rest.models import (
    CreateEndpointRequest,
    CreateTemplateRequest,
    Endpoint,
    Template,
    UpdateEndpointRequest,
    UpdateTemplateRequest,
)
from videokit.serve.app import running_server

_CONTAINER = ("args", "disk", "env", "image", "ports", "registry")


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    body: dict[str, Any] | None
    authorization: str | None


@dataclass
class _Fault:
    method: str
    path: str
    status: int
    detail: str
    times: int


def problem(status: int, title: str, detail: str, errors: list[str] | None = None) -> Response:
    document: dict[str, Any] = {"title": title, "status": status, "detail": detail}
    if errors:
        document["errors"] = errors
    return JSONResponse(document, status_code=status, media_type="application/problem+json")


@dataclass
class RestEmulator:
    api_key: str
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)  # bodies that did not validate
    faults: list[_Fault] = field(default_factory=list)
    base_url: str = ""
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- for tests

    def fail(self, method: str, path: str, status: int, detail: str = "", times: int = 1) -> None:
        """The next ``times`` requests ``method path`` (``/v2/...``) are answered ``status``."""
        self.faults.append(_Fault(method, path, status, detail or f"emulated {status}", times))

    def writes(self) -> list[Recorded]:
        return [r for r in self.requests if r.method != "GET"]

    def add_template(self, **fields: Any) -> dict[str, Any]:
        """A template made by hand (the console), validated like a POST."""
        return self._create_template(CreateTemplateRequest.model_validate(fields))

    # -- the app

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v2/templates", self._handle, methods=["GET", "POST"]),
                Route("/v2/templates/{id}", self._handle, methods=["GET", "PATCH"]),
                Route("/v2/serverless", self._handle, methods=["GET", "POST"]),
                Route("/v2/serverless/{id}", self._handle, methods=["GET", "PATCH"]),
            ]
        )

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        body: dict[str, Any] | None = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = {"(not JSON)": raw.decode(errors="replace")}
        path = request.url.path
        with self._lock:
            self.requests.append(
                Recorded(request.method, path, body, request.headers.get("authorization"))
            )
            if request.headers.get("authorization") != f"Bearer {self.api_key}":
                return problem(401, "Unauthorized", "missing or invalid bearer token")
            for fault in self.faults:
                if fault.times > 0 and (fault.method, fault.path) == (request.method, path):
                    fault.times -= 1
                    return problem(fault.status, "Emulated", fault.detail)
            kind = "templates" if path.startswith("/v2/templates") else "serverless"
            object_id = request.path_params.get("id")
            try:
                return self._route(request.method, kind, object_id, raw)
            except _Refused as refused:
                return problem(refused.status, refused.title, refused.detail, refused.errors)

    def _route(self, method: str, kind: str, object_id: str | None, raw: bytes) -> Response:
        store = self.templates if kind == "templates" else self.endpoints
        answer: type[BaseModel] = Template if kind == "templates" else Endpoint
        if method == "GET" and object_id is None:
            return self._answer(
                {kind if kind == "templates" else "endpoints": list(store.values())}
            )
        if object_id is not None and object_id not in store:
            what = "template" if kind == "templates" else "endpoint"
            raise _Refused(404, "Not Found", f"{what} {object_id} not found")
        if method == "GET":
            assert object_id is not None
            record = store[object_id]
        elif kind == "templates" and object_id is None:
            record = self._create_template(self._validate(CreateTemplateRequest, raw))
        elif kind == "templates":
            assert object_id is not None
            record = self._update_template(
                object_id, self._validate(UpdateTemplateRequest, raw), raw
            )
        elif object_id is None:
            record = self._create_endpoint(self._validate(CreateEndpointRequest, raw))
        else:
            record = self._update_endpoint(
                object_id, self._validate(UpdateEndpointRequest, raw), raw
            )
        answer.model_validate(record)  # the emulator answers what the document promises
        return self._answer(record, status=201 if method == "POST" else 200)

    def _answer(self, document: dict[str, Any], status: int = 200) -> Response:
        return JSONResponse(json.loads(json.dumps(document, default=str)), status_code=status)

    def _validate(self, model: type[Any], raw: bytes) -> Any:
        try:
            return model.model_validate_json(raw)
        except ValidationError as exc:
            errors = [
                f"{'.'.join(str(p) for p in e['loc']) or '$'}: {e['msg']}" for e in exc.errors()
            ]
            self.invalid.append(f"{model.__name__}: {'; '.join(errors)}")
            raise _Refused(400, "Bad Request", "request body does not validate", errors) from None

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):04d}"

    # -- templates

    def _create_template(self, body: CreateTemplateRequest) -> dict[str, Any]:
        if any(t["name"] == body.name for t in self.templates.values()):
            raise _Refused(400, "Bad Request", f"a template named {body.name!r} already exists")
        sent = body.model_dump(mode="json", exclude_unset=True)
        record: dict[str, Any] = {
            "id": self._new_id("tpl"), "args": "", "disk": 10, "mounts": {}, "ports": [],
            "env": {}, "registry": None, "serverless": False, "public": False,
            "category": "NVIDIA", "startSsh": True, "startJupyter": True,
            "allowedCudaVersions": [], **sent,
        }  # fmt: skip
        self.templates[record["id"]] = record
        return record

    def _update_template(
        self, template_id: str, body: UpdateTemplateRequest, raw: bytes
    ) -> dict[str, Any]:
        record = self.templates[template_id]
        sent = body.model_dump(mode="json", exclude_unset=True)
        name = sent.get("name")
        if name and any(t["name"] == name and i != template_id for i, t in self.templates.items()):
            raise _Refused(400, "Bad Request", f"a template named {name!r} already exists")
        record.update(sent)
        return record

    # -- endpoints

    def _container_of(self, template_id: str) -> dict[str, Any]:
        template = self.templates.get(template_id)
        if template is None:
            raise _Refused(404, "Not Found", f"template {template_id} not found")
        if not template["serverless"]:
            raise _Refused(422, "Unprocessable Entity", f"template {template_id} is not serverless")
        return json.loads(json.dumps({key: template[key] for key in _CONTAINER}))  # a copy

    def _create_endpoint(self, body: CreateEndpointRequest) -> dict[str, Any]:
        sent = body.model_dump(mode="json", exclude_unset=True)
        container: dict[str, Any] = {
            "args": "",
            "disk": 10,
            "env": {},
            "ports": [],
            "registry": None,
        }
        template_cuda: list[str] = []
        if body.templateId is not None:
            container = self._container_of(body.templateId)
            template_cuda = self.templates[body.templateId]["allowedCudaVersions"]
        for key in _CONTAINER:
            if key == "env" and "env" in sent:
                container["env"] = {**container.get("env", {}), **sent["env"]}
            elif key in sent:
                container[key] = sent[key]
        gpu = sent.get("gpu") or {"pools": ["ADA_24"]}
        if "allowedCudaVersions" not in gpu and "minCudaVersion" not in gpu:
            gpu["allowedCudaVersions"] = list(template_cuda)
        workers = {"min": 0, "max": 3, "idleTimeout": 10, **sent.get("workers", {})}
        if body.type == "QUEUE" and body.scaling.type == "REQUEST_COUNT":
            workers.pop("idleTimeout", None)
        record: dict[str, Any] = {
            "id": self._new_id("ep"),
            "name": body.name,
            "type": body.type,
            **container,
            "gpu": {
                "count": 1,
                "minCudaVersion": None,
                "allowedCudaVersions": [],
                **gpu,
            },
            "workers": workers,
            "scaling": sent["scaling"],
            "dataCenterIds": sent.get("dataCenterIds", []),
            "networkVolumes": sent.get("networkVolumes", []),
            "timeout": sent.get("timeout", 300000),
            "flashboot": sent.get("flashboot", "OFF"),
            "createdAt": datetime.now(UTC).isoformat(),
        }
        self.endpoints[record["id"]] = record
        return record

    def _update_endpoint(
        self, endpoint_id: str, body: UpdateEndpointRequest, raw: bytes
    ) -> dict[str, Any]:
        record = json.loads(json.dumps(self.endpoints[endpoint_id]))  # applied only if all is well
        sent = body.model_dump(mode="json", exclude_unset=True)
        if "templateId" in sent:
            container = self._container_of(sent.pop("templateId"))
            env = {**container.pop("env"), **sent.get("env", {})}
            record.update(container, env=env)
            sent.pop("env", None)
        gpu = sent.pop("gpu", None)
        if gpu is not None:
            if "pools" in gpu and "excludedTypes" not in gpu:
                record["gpu"].pop("excludedTypes", None)
            record["gpu"].update(gpu)
            if record["gpu"].get("allowedCudaVersions") and record["gpu"].get("minCudaVersion"):
                raise _Refused(
                    400, "Bad Request", "allowedCudaVersions and minCudaVersion both set"
                )
            if record["gpu"].get("minCudaVersion") == "":
                record["gpu"]["minCudaVersion"] = None
        workers = sent.pop("workers", None)
        if workers is not None:
            record["workers"].update(workers)
        record.update(sent)
        if record["scaling"]["type"] == "REQUEST_COUNT" and record.get("type") == "QUEUE":
            if workers is not None and "idleTimeout" in workers:
                raise _Refused(422, "Unprocessable Entity", "idleTimeout with requestCount")
            record["workers"].pop("idleTimeout", None)
        self.endpoints[endpoint_id] = record
        return record


class _Refused(Exception):
    def __init__(self, status: int, title: str, detail: str, errors: list[str] | None = None):
        super().__init__(detail)
        self.status, self.title, self.detail, self.errors = status, title, detail, errors


@contextmanager
def rest_emulator(api_key: str) -> Iterator[RestEmulator]:
    """Run the emulator on a free loopback port; ``.base_url`` is ``http://127.0.0.1:PORT/v2``."""
    emulator = RestEmulator(api_key=api_key)
    with running_server(emulator.app()) as origin:
        emulator.base_url = f"{origin}/v2"
        yield emulator
