"""The request and response bodies of RunPod's REST API v2 that videokit uses, as pydantic models.

Written by hand from RunPod's OpenAPI 3.1 document ``api-reference-v2/openapi.json`` in
runpod/docs, commit 098c7fb0c6c374b1d053f896757a2282bf18e796 (2026-08-18), ``components/schemas``:
names, required fields and types as there. Requests are strict (unknown fields, wrong types and
the document's own constraints are refused here, before anything is sent); responses allow extra
fields, so a field RunPod adds later does not break videokit. Covered: templates, serverless
endpoints, workers, worker log events, the GPU catalog and serverless/public-endpoint billing.
Not modelled: CPU endpoints (``cpu``), pods, clusters, volumes, registries.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

__all__ = [
    "OPENAPI_COMMIT",
    "OPENAPI_DATE",
    "CreateEndpointGpuConfig",
    "CreateEndpointRequest",
    "CreateTemplateRequest",
    "Endpoint",
    "EndpointBillingRecord",
    "EndpointGpuConfig",
    "EndpointWorkers",
    "EndpointWorkersState",
    "ErrorResponse",
    "GpuType",
    "ListEndpointBillingResponse",
    "ListEndpointWorkersResponse",
    "ListEndpointsResponse",
    "ListGpuTypesResponse",
    "ListServerlessBillingResponse",
    "ListTemplatesResponse",
    "QueueDelayScaling",
    "RequestCountScaling",
    "ServerlessBillingRecord",
    "Template",
    "UpdateEndpointGpuConfig",
    "UpdateEndpointRequest",
    "UpdateTemplateRequest",
    "Worker",
    "WorkerLogEvent",
]

OPENAPI_COMMIT = "098c7fb0c6c374b1d053f896757a2282bf18e796"
OPENAPI_DATE = "2026-08-18"

CudaVersion = Annotated[str, StringConstraints(pattern=r"^\d+\.\d+$")]
FlashBoot = Literal["OFF", "FLASHBOOT", "PRIORITY_FLASHBOOT"]
EndpointType = Literal["QUEUE", "LOAD_BALANCER"]
TemplateCategory = Literal["CPU", "NVIDIA", "AMD"]
WorkerStatus = Literal["RUNNING", "IDLE", "INITIALIZING", "THROTTLED", "UNHEALTHY"]
AvailabilityLevel = Literal["NONE", "LOW", "MEDIUM", "HIGH"]
BillingBucketSize = Literal["hour", "day", "week", "month", "year"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


# -- shared pieces ---------------------------------------------------------------------------------


class _ContainerConfig(_Request):
    """``ContainerConfig`` (``BaseContainerConfig`` + ``registry``), as sent."""

    args: str | None = None
    disk: int | None = Field(default=None, ge=1)
    env: dict[str, str] | None = None
    image: str | None = None
    ports: list[str] | None = None
    registry: str | None = None


class _ContainerState(_Response):
    args: str | None = None
    disk: int | None = None
    env: dict[str, str] | None = None
    image: str | None = None
    ports: list[str] | None = None
    registry: str | None = None


class PersistentMount(_Request):
    size: int = Field(ge=10)
    path: str


class TemplateMounts(_Request):
    persistent: PersistentMount | None = None


class QueueDelayScaling(_Request):
    type: Literal["QUEUE_DELAY"]
    queueDelay: float = Field(ge=0.5)


class RequestCountScaling(_Request):
    type: Literal["REQUEST_COUNT"]
    requestCount: int = Field(ge=1)


EndpointScaling = Annotated[QueueDelayScaling | RequestCountScaling, Field(discriminator="type")]


class EndpointWorkers(_Request):
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)
    idleTimeout: int | None = Field(default=None, ge=1, le=3600)


# -- templates -------------------------------------------------------------------------------------


class CreateTemplateRequest(_ContainerConfig):
    """``POST /v2/templates``."""

    name: str = Field(min_length=1)
    image: str  # required here (optional in ContainerConfig)
    allowedCudaVersions: list[CudaVersion] | None = None
    category: TemplateCategory | None = None
    mounts: TemplateMounts | None = None
    public: bool | None = None
    serverless: bool | None = None
    startJupyter: bool | None = None
    startSsh: bool | None = None


class UpdateTemplateRequest(_ContainerConfig):
    """``PATCH /v2/templates/{id}``: only the fields sent change."""

    allowedCudaVersions: list[CudaVersion] | None = None
    category: TemplateCategory | None = None
    mounts: TemplateMounts | None = None
    name: str | None = Field(default=None, min_length=1)
    public: bool | None = None
    serverless: bool | None = None
    startJupyter: bool | None = None
    startSsh: bool | None = None


class Template(_ContainerState):
    id: str
    name: str
    image: str
    args: str
    disk: int
    mounts: dict[str, Any]
    ports: list[str]
    env: dict[str, str]
    registry: str | None
    serverless: bool
    public: bool
    category: TemplateCategory
    startSsh: bool
    startJupyter: bool
    allowedCudaVersions: list[str]


class ListTemplatesResponse(_Response):
    templates: list[Template]


# -- serverless endpoints --------------------------------------------------------------------------


def _cuda_exclusive(allowed: list[str] | None, floor: str | None) -> None:
    if allowed and floor:
        raise ValueError("a non-empty allowedCudaVersions and minCudaVersion exclude each other")


class CreateEndpointGpuConfig(_Request):
    pools: list[str] = Field(min_length=1)
    excludedTypes: list[Annotated[str, StringConstraints(pattern=r"^\s*[^-\s]")]] | None = None
    count: int | None = Field(default=None, ge=1)
    allowedCudaVersions: list[CudaVersion] | None = None
    minCudaVersion: CudaVersion | None = None

    @model_validator(mode="after")
    def _exclusive(self) -> CreateEndpointGpuConfig:
        _cuda_exclusive(self.allowedCudaVersions, self.minCudaVersion)
        return self


class UpdateEndpointGpuConfig(_Request):
    pools: list[str] | None = Field(default=None, min_length=1)
    excludedTypes: list[Annotated[str, StringConstraints(pattern=r"^\s*[^-\s]")]] | None = None
    count: int | None = Field(default=None, ge=1)
    allowedCudaVersions: list[CudaVersion] | None = None
    minCudaVersion: Annotated[str, StringConstraints(pattern=r"^$|^\d+\.\d+$")] | None = None

    @model_validator(mode="after")
    def _rules(self) -> UpdateEndpointGpuConfig:
        _cuda_exclusive(self.allowedCudaVersions, self.minCudaVersion)
        if self.excludedTypes is not None and self.pools is None:
            raise ValueError("excludedTypes requires pools")
        return self


class CreateEndpointRequest(_ContainerConfig):
    """``POST /v2/serverless``. Without ``templateId``, ``image`` is required."""

    name: str = Field(min_length=1)
    type: EndpointType
    scaling: EndpointScaling
    gpu: CreateEndpointGpuConfig | None = None
    dataCenterIds: list[str] | None = None
    flashboot: FlashBoot | None = None
    networkVolumes: list[str] | None = None
    templateId: str | None = Field(default=None, min_length=1)
    timeout: int | None = None
    workers: EndpointWorkers | None = None

    @model_validator(mode="after")
    def _rules(self) -> CreateEndpointRequest:
        if self.templateId is None and self.image is None:
            raise ValueError("image is required when templateId is not given")
        if self.type == "LOAD_BALANCER" and self.scaling.type != "REQUEST_COUNT":
            raise ValueError("a LOAD_BALANCER endpoint scales on REQUEST_COUNT")
        idle = self.workers.idleTimeout if self.workers is not None else None
        if self.type == "QUEUE" and self.scaling.type == "REQUEST_COUNT" and idle is not None:
            raise ValueError(
                "workers.idleTimeout does not apply to a QUEUE endpoint on requestCount"
            )
        return self


class UpdateEndpointRequest(_ContainerConfig):
    """``PATCH /v2/serverless/{id}``: only the fields sent change."""

    dataCenterIds: list[str] | None = None
    flashboot: FlashBoot | None = None
    gpu: UpdateEndpointGpuConfig | None = None
    name: str | None = Field(default=None, min_length=1)
    networkVolumes: list[str] | None = None
    scaling: EndpointScaling | None = None
    templateId: str | None = None
    timeout: int | None = None
    workers: EndpointWorkers | None = None


class EndpointGpuConfig(_Response):
    pools: list[str]
    excludedTypes: list[str] | None = None
    count: int = 1
    allowedCudaVersions: list[str]
    minCudaVersion: str | None


class EndpointWorkersState(_Response):
    min: int
    max: int
    idleTimeout: int | None = None


class QueueDelayScalingState(_Response):
    type: Literal["QUEUE_DELAY"]
    queueDelay: float


class RequestCountScalingState(_Response):
    type: Literal["REQUEST_COUNT"]
    requestCount: int


class Endpoint(_ContainerState):
    id: str
    name: str
    type: EndpointType | None = None
    requestUrls: dict[str, str] | None = None
    gpu: EndpointGpuConfig | None = None
    cpu: list[dict[str, Any]] | None = None
    workers: EndpointWorkersState
    scaling: Annotated[
        QueueDelayScalingState | RequestCountScalingState, Field(discriminator="type")
    ]
    dataCenterIds: list[str]
    networkVolumes: list[str]
    timeout: int
    flashboot: FlashBoot
    createdAt: datetime


class ListEndpointsResponse(_Response):
    endpoints: list[Endpoint]


# -- workers and their logs (GET /v2/serverless/{id}/workers, .../workers/{workerId}/logs) --------


class Worker(_Response):
    id: str
    status: WorkerStatus
    isStale: bool
    gpuCount: int = Field(ge=0)
    version: int | None = None
    image: str | None = None
    uptimeSeconds: int | None = None
    gpuTypeId: str | None = None
    dataCenterId: str | None = None
    startedAt: datetime | None = None


class WorkerSummary(_Response):
    running: int
    idle: int
    initializing: int
    throttled: int
    unhealthy: int
    total: int


class ListEndpointWorkersResponse(_Response):
    workers: list[Worker]
    summary: WorkerSummary
    endpointVersion: int | None = None


class WorkerLogEvent(_Response):
    """The JSON ``data:`` of one Server-Sent Event of a worker's log stream."""

    ts: datetime
    source: Literal["container", "system"]
    line: str


# -- the GPU catalog (GET /v2/catalog/gpus) --------------------------------------------------------


class GpuPrice(_Response):
    """List price in USD per hour for one GPU; ``serverless`` is its pool's rate, if any."""

    secure: float
    community: float
    serverless: float | None = None


class GpuMaxCount(_Response):
    secure: int
    community: int


class DataCenterAvailability(_Response):
    id: str
    name: str
    availability: AvailabilityLevel


class CudaVersionAvailability(_Response):
    version: str
    available: bool


class GpuType(_Response):
    id: str
    name: str
    pool: str | None
    manufacturer: Literal["NVIDIA", "AMD", "UNKNOWN"]
    memory: int
    secure: bool
    community: bool
    price: GpuPrice
    maxCount: GpuMaxCount
    availability: AvailabilityLevel | None = None
    dataCenters: list[DataCenterAvailability] | None = None
    cudaVersions: list[CudaVersionAvailability] | None = None


class ListGpuTypesResponse(_Response):
    gpus: list[GpuType]


# -- billing (GET /v2/billing/serverless, /v2/billing/endpoints) ----------------------------------


class BillingQuery(_Response):
    startTime: datetime
    endTime: datetime
    bucketSize: BillingBucketSize
    serverlessId: str | None = None  # ServerlessBillingQuery only


class ServerlessBillingAmounts(_Response):
    totalAmount: float
    gpuAmount: float
    cpuAmount: float
    diskAmount: float
    feeAmount: float


class ServerlessBillingRecord(ServerlessBillingAmounts):
    startTime: datetime
    endTime: datetime
    serverlessId: str


class ServerlessBillingMetadata(_Response):
    query: BillingQuery
    recordCount: int
    uniqueServerlessCount: int
    totals: ServerlessBillingAmounts


class ListServerlessBillingResponse(_Response):
    records: list[ServerlessBillingRecord]
    metadata: ServerlessBillingMetadata


class EndpointBillingAmounts(_Response):
    totalAmount: float


class EndpointBillingRecord(EndpointBillingAmounts):
    startTime: datetime
    endTime: datetime


class EndpointBillingMetadata(_Response):
    query: BillingQuery
    recordCount: int
    totals: EndpointBillingAmounts


class ListEndpointBillingResponse(_Response):
    records: list[EndpointBillingRecord]
    metadata: EndpointBillingMetadata


# -- errors ----------------------------------------------------------------------------------------


class ErrorResponse(_Response):
    """``application/problem+json`` error bodies."""

    title: str
    status: int
    detail: str
    errors: list[str] | None = None
