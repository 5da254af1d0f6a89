"""A loopback emulator of RunPod's ``GET /v2/catalog/gpus``, for the GPU price tests.

Real HTTP on 127.0.0.1 (``videokit.serve.app.running_server``). The answer is built from
:class:`videokit.rest.models.GpuType` objects and checked against ``ListGpuTypesResponse``, so it
has the shape of RunPod's OpenAPI document. With ``api_key`` set, a request without that bearer key
is answered 401, as RunPod does; with None, any request is answered (the CLI sends no key to a
host that is not RunPod's). Every catalog request is recorded with its Authorization header. It
also answers ``GET /v2/{endpoint}/health``, which ``plan`` reads for the endpoints it would use.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from videokit.rest.models import GpuMaxCount, GpuPrice, GpuType, ListGpuTypesResponse
from videokit.serve.app import running_server

__all__ = ["CATALOG", "CatalogEmulator", "catalog_emulator", "gpu"]


def gpu(gpu_id: str, name: str, pool: str | None, memory: int, per_hour: float | None) -> GpuType:
    """One GPU type as the catalog lists it; ``per_hour`` is the serverless rate (None: pods only)."""
    return GpuType(
        id=gpu_id,
        name=name,
        pool=pool,
        manufacturer="NVIDIA",
        memory=memory,
        secure=True,
        community=False,
        price=GpuPrice(secure=2.69, community=1.99, serverless=per_hour),
        maxCount=GpuMaxCount(secure=8, community=0),
    )


# $3.60 an hour is $0.001 a second; $5.04 an hour $0.0014 (the built-in table: 0.00116, 0.00155).
CATALOG = (
    gpu("NVIDIA H100 80GB HBM3", "H100 SXM", "ADA_80_PRO", 80, 3.60),
    gpu("NVIDIA H100 PCIe", "H100 PCIe", "ADA_80_PRO", 80, 3.60),
    gpu("NVIDIA H200", "H200 SXM 141GB", "HOPPER_141", 141, 5.04),
    gpu("NVIDIA GeForce RTX 3070", "RTX 3070", None, 8, None),  # pods only
)


@dataclass
class CatalogEmulator:
    api_key: str | None = None
    gpus: tuple[GpuType, ...] = CATALOG
    requests: list[str | None] = field(default_factory=list)  # each catalog GET's Authorization
    base_url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v2/catalog/gpus", self._catalog, methods=["GET"]),
                Route("/v2/{endpoint}/health", self._health, methods=["GET"]),
            ]
        )

    async def _catalog(self, request: Request) -> Response:
        authorization = request.headers.get("authorization")
        with self._lock:
            self.requests.append(authorization)
        if self.api_key is not None and authorization != f"Bearer {self.api_key}":
            problem = {"title": "Unauthorized", "status": 401, "detail": "invalid API key"}
            return JSONResponse(problem, status_code=401, media_type="application/problem+json")
        answer = ListGpuTypesResponse(gpus=list(self.gpus))
        document = answer.model_dump(mode="json")
        ListGpuTypesResponse.model_validate(document)  # what is sent validates
        return JSONResponse(document)

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"jobs": {"inQueue": 0}, "workers": {"idle": 1, "ready": 1}})


@contextmanager
def catalog_emulator(api_key: str | None = None) -> Iterator[CatalogEmulator]:
    """Run the emulator on a free loopback port; ``.base_url`` is ``http://127.0.0.1:PORT/v2``."""
    emulator = CatalogEmulator(api_key=api_key)
    with running_server(emulator.app()) as origin:
        emulator.base_url = f"{origin}/v2"
        yield emulator
