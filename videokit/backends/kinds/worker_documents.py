"""What the kinds of workers users already run share: animate jobs only, billed per GPU second,
no cost in their output; and reading what they answered (:mod:`videokit.dialects`): the
documented output model, and the media returned inline.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from videokit.costs import OutputPrice
from videokit.errors import ConfigError, EndpointError
from videokit.protocol import AnimateRequest, EditRequest, MediaInput, MediaOutput

__all__ = ["AnimateWorkerKind", "output_media", "parse_output"]

Model = TypeVar("Model", bound=BaseModel)


class AnimateWorkerKind:
    """The parts of :class:`~videokit.backends.kinds.ApiKind` a GPU worker's kind shares."""

    inputs_by_url = False
    offloads_inputs = False
    price: OutputPrice | None = None
    typical_execution_s: float | None = None

    def animate_request(self, request: EditRequest | AnimateRequest) -> AnimateRequest:
        """``request``, which must be an animate one: these workers only animate."""
        if not isinstance(request, AnimateRequest):
            kind = getattr(self, "name", type(self).__name__)
            raise ConfigError(f"{kind} endpoints run animate jobs only")
        return request

    def reported_cost(self, output: Any) -> float | None:
        return None  # they are billed per GPU second, and say nothing of it


def parse_output(model: type[Model], output: Mapping[str, Any], kind: str, worker: str) -> Model:
    """``output`` as ``model`` documents it; an EndpointError naming the first mismatch."""
    try:
        return model.model_validate(output)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise EndpointError(
            f"the {kind} output does not match its documented shape: {exc.error_count()} "
            f"problem(s), first: {first['loc']}: {first['msg']}",
            hint=f"check that the endpoint runs the {worker}",
        ) from None


def output_media(
    inline: str | None, url: str | None, content_type: str, what: str, kind: str
) -> MediaOutput:
    """An output file a worker answered with inline (``*_base64``); a URL-only one is refused,
    since videokit never asked for an upload and cannot vouch for it."""
    if inline is None:
        raise EndpointError(
            f"{kind} answered without {what}_base64"
            + (" (it uploaded it somewhere instead)" if url else ""),
            hint="remove the worker's R2/S3 result upload configuration, or use its inline output",
        )
    try:
        data = MediaInput(base64=inline).decode()
    except ValueError as exc:
        raise EndpointError(f"{kind} answered with invalid {what}_base64: {exc}") from None
    return MediaOutput.inline(data, content_type)
