"""Endpoint API kinds: how a request becomes an endpoint's input document, and its output a result.

Every kind speaks RunPod's v2 queue API (``run``, ``status``, ``cancel``); what differs is the
``input`` it takes and the ``output`` it returns. ``videokit`` is videokit's own wire protocol (its
workers and ``videokit serve``); ``runpod-public`` is RunPod's Public Endpoints (see
:mod:`~videokit.backends.kinds.catalogue`), chosen by the endpoint id alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol

from videokit.backends.kinds.catalogue import PUBLIC_MODELS, PublicModel, public_model
from videokit.capabilities import AnimateCapabilities, EditCapabilities
from videokit.costs import OutputPrice
from videokit.protocol import AnimateRequest, AnimateResult, EditRequest, EditResult

__all__ = [
    "KIND_NAMES",
    "PUBLIC_MODELS",
    "ApiKind",
    "KindName",
    "PublicModel",
    "kind_name",
    "public_model",
]

KindName = Literal["videokit", "runpod-public"]
KIND_NAMES: tuple[KindName, ...] = ("videokit", "runpod-public")


def kind_name(endpoint_id: str) -> KindName:
    """The kind an endpoint id selects by itself: a known public endpoint id is ``runpod-public``;
    anything else (your own endpoint id, a ``videokit serve`` URL) is ``videokit``."""
    return "runpod-public" if public_model(endpoint_id) is not None else "videokit"


class ApiKind(Protocol):
    """One endpoint's API: request -> input document, output -> result, limits and price."""

    @property
    def name(self) -> KindName: ...

    @property
    def model(self) -> str | None:
        """Names the model in cache keys (None: the endpoint's configured model, or the stage)."""
        ...

    @property
    def price(self) -> OutputPrice | None:
        """Per-output price, for endpoints billed that way (None: billed per GPU second)."""
        ...

    @property
    def capabilities(self) -> EditCapabilities | AnimateCapabilities | None: ...

    @property
    def typical_execution_s(self) -> float | None:
        """How long a job usually runs, before anything was measured (None: the cost model's
        guess)."""
        ...

    @property
    def inputs_by_url(self) -> bool:
        """Images travel by URL (S3/R2 storage must be configured), never inline."""
        ...

    async def input_document(self, request: EditRequest | AnimateRequest) -> dict[str, Any]: ...

    async def result(
        self,
        request: EditRequest | AnimateRequest,
        output: Mapping[str, Any],
        execution_ms: int | None,
    ) -> EditResult | AnimateResult: ...

    def reported_cost(self, output: Any) -> float | None:
        """The job's cost as its output states it (``output.cost``), if it does."""
        ...
