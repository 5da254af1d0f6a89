"""Endpoint API kinds: how a request becomes an endpoint's input document, and its output a result.

Every kind speaks RunPod's v2 queue API (``run``, ``status``, ``cancel``); what differs is the
``input`` it takes and the ``output`` it returns. ``videokit`` is videokit's own wire protocol (its
workers and ``videokit serve``); ``runpod-public`` is RunPod's Public Endpoints (see
:mod:`~videokit.backends.kinds.catalogue`), chosen by the endpoint id alone; ``lightx2v-worker``,
``comfy-wan-worker`` and ``worker-comfyui`` are Wan workers that users already run (see
:mod:`videokit.dialects` and :mod:`~videokit.backends.kinds.comfy_workflow`). An endpoint names
its kind as a prefix: ``comfy-wan-worker:abc123``, ``lightx2v-worker:http://gpu-box:8000/v2/wan``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal, Protocol, get_args

from videokit.backends.kinds.catalogue import PUBLIC_MODELS, PublicModel, public_model
from videokit.capabilities import AnimateCapabilities, EditCapabilities
from videokit.costs import OutputPrice
from videokit.errors import ConfigError
from videokit.protocol import AnimateRequest, AnimateResult, EditRequest, EditResult

__all__ = [
    "KIND_NAMES",
    "KIND_STAGES",
    "PUBLIC_MODELS",
    "ApiKind",
    "KindName",
    "PublicModel",
    "kind_name",
    "parse_route",
    "public_model",
    "sends_inline",
]

KindName = Literal[
    "videokit", "runpod-public", "lightx2v-worker", "comfy-wan-worker", "worker-comfyui"
]
KIND_NAMES: tuple[KindName, ...] = get_args(KindName)
#: The stages each kind runs.
KIND_STAGES: Final[Mapping[KindName, tuple[Literal["edit", "animate"], ...]]] = {
    "videokit": ("edit", "animate"),
    "runpod-public": ("edit", "animate"),
    "lightx2v-worker": ("animate",),
    "comfy-wan-worker": ("animate",),
    "worker-comfyui": ("animate",),
}


def kind_name(endpoint_id: str) -> KindName:
    """The kind an endpoint id selects by itself: a known public endpoint id is ``runpod-public``;
    anything else (your own endpoint id, a ``videokit serve`` URL) is ``videokit``."""
    return "runpod-public" if public_model(endpoint_id) is not None else "videokit"


def parse_route(text: str, *, where: str) -> list[tuple[KindName | None, str]]:
    """``kind:id`` entries separated by commas (the kind is optional): a stage's endpoints in
    order of preference. ``where`` names the setting in error messages."""
    entries: list[tuple[KindName | None, str]] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            raise ConfigError(
                f"{where} has an empty entry: {text!r}",
                hint="separate endpoints with single commas, e.g. "
                "http://gpu-box:8002/v2/animate,my-runpod-id,wan-2-2-i2v-720",
            )
        kind: KindName | None = None
        prefix, sep, rest = entry.partition(":")
        if sep and prefix in KIND_NAMES:
            kind, entry = prefix, rest.strip()
        elif sep and not rest.startswith("//") and "." not in prefix and "/" not in prefix:
            import difflib

            close = difflib.get_close_matches(prefix, KIND_NAMES, n=1)
            raise ConfigError(
                f"{where}: {prefix!r} is not an endpoint kind"
                + (f" (did you mean {close[0]!r}?)" if close else ""),
                hint=f"kinds are: {', '.join(KIND_NAMES)}; write kind:endpoint-id or "
                "kind:http://host:port/path",
            )
        if not entry:
            raise ConfigError(f"{where}: {raw.strip()!r} names a kind but no endpoint")
        entries.append((kind, entry))
    return entries


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

    @property
    def offloads_inputs(self) -> bool:
        """With S3/R2 storage configured, large inputs travel by URL (False: always inline, so
        a job body must stay under RunPod's 10 MB)."""
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


def sends_inline(kind: ApiKind, storage: object | None) -> bool:
    """Whether ``kind``'s job bodies carry media inline, given the configured storage (so they
    are held to RunPod's 10 MB body limit)."""
    return not kind.inputs_by_url and not (storage is not None and kind.offloads_inputs)
