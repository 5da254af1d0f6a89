"""An async client for RunPod's REST API v2 (templates and serverless endpoints).

``RUNPOD_API_KEY`` goes as ``Authorization: Bearer`` only to RunPod's own API over https
(``https://api.runpod.io``, port 443); RunPod's host over plain http is refused (ConfigError). Any
other host (a proxy, a loopback emulator) gets no key unless the caller passes
``allow_key_to_any_host=True`` (tests). Redirects are not followed. Every request goes through
:class:`~videokit.backends.retry.RetryPolicy`: GETs are retried until a deadline, POST/PATCH a
bounded count (a create whose reply was lost may have happened: deploy finds it by name next
time). 400/401/403/404/422 are not retried and become a :class:`RestError` saying what failed and
how to fix it. Every answer is parsed into :mod:`videokit.rest.models`. Neither the key nor any
value passed in ``secrets`` ever appears in an error.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from videokit.backends.retry import RetryPolicy
from videokit.backends.runpod.config import is_https_host
from videokit.errors import ConfigError, VideoKitError
from videokit.rest.models import (
    CreateEndpointRequest,
    CreateTemplateRequest,
    Endpoint,
    ErrorResponse,
    ListEndpointsResponse,
    ListTemplatesResponse,
    Template,
    UpdateEndpointRequest,
    UpdateTemplateRequest,
)

__all__ = [
    "DEFAULT_REST_URL",
    "REST_API_HOST",
    "RestError",
    "RunPodRest",
    "is_runpod_rest",
    "json_body",
]

DEFAULT_REST_URL = "https://api.runpod.io/v2"
REST_API_HOST = "api.runpod.io"
Method = Literal["GET", "POST", "PATCH"]
M = TypeVar("M", bound=BaseModel)

_HINTS = {
    401: "check RUNPOD_API_KEY (RunPod console > Settings > API Keys); it may be revoked",
    403: "use a key with read/write access to Serverless and Templates",
    404: "it may have been deleted in the console: run the command again to recreate it",
    400: "this is a bug in videokit or a change in RunPod's API: please report it",
    422: "this is a bug in videokit or a change in RunPod's API: please report it",
}


class RestError(VideoKitError):
    """RunPod's REST API refused a request, failed, or answered something unexpected."""

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.status = status


def is_runpod_rest(url: str | httpx.URL) -> bool:
    """Whether ``url`` is RunPod's own REST API over https: the only place the key is sent."""
    return is_https_host(url, REST_API_HOST)


class RunPodRest:
    """Templates and serverless endpoints over REST v2; use as ``async with RunPodRest(...)``."""

    def __init__(
        self,
        api_key: str | None,
        *,
        base_url: str = DEFAULT_REST_URL,
        allow_key_to_any_host: bool = False,
        secrets: Iterable[str] = (),
        policy: RetryPolicy | None = None,
        read_deadline_s: float = 60.0,
        write_attempts: int = 3,
        timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        try:
            url = httpx.URL(base_url.rstrip("/"))
        except httpx.InvalidURL:
            url = httpx.URL("")
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError(
                f"{base_url!r} is not an http(s) URL for RunPod's REST API",
                hint=f"set VIDEOKIT_RUNPOD_REST_URL to a URL like {DEFAULT_REST_URL}, or unset it",
            )
        if url.host == REST_API_HOST and url.scheme != "https":
            raise ConfigError(
                f"{url.scheme}://{REST_API_HOST}: RunPod serves its API over https only, and the"
                " API key is never sent in clear",
                hint=f"use {DEFAULT_REST_URL}",
            )
        self.base_url = url
        self._key = (api_key or "").strip() or None
        self._send_key = self._key is not None and (allow_key_to_any_host or is_runpod_rest(url))
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
        self._policy = policy or RetryPolicy(attempts=write_attempts)
        self._read_deadline_s = read_deadline_s
        self._write_attempts = write_attempts
        self._client = httpx.AsyncClient(
            timeout=timeout_s, follow_redirects=False, transport=transport
        )

    async def __aenter__(self) -> RunPodRest:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    def path(self, route: str) -> str:
        """The full path of ``route`` (``templates`` -> ``/v2/templates``), as requests show it."""
        return f"{self.base_url.path.rstrip('/')}/{route.lstrip('/')}"

    # -- templates

    async def list_templates(self) -> list[Template]:
        return (await self._call("GET", "templates", ListTemplatesResponse)).templates

    async def get_template(self, template_id: str) -> Template:
        return await self._call("GET", f"templates/{template_id}", Template)

    async def create_template(self, body: CreateTemplateRequest) -> Template:
        return await self._call("POST", "templates", Template, body)

    async def update_template(self, template_id: str, body: UpdateTemplateRequest) -> Template:
        return await self._call("PATCH", f"templates/{template_id}", Template, body)

    # -- serverless endpoints

    async def list_endpoints(self) -> list[Endpoint]:
        return (await self._call("GET", "serverless", ListEndpointsResponse)).endpoints

    async def get_endpoint(self, endpoint_id: str) -> Endpoint:
        return await self._call("GET", f"serverless/{endpoint_id}", Endpoint)

    async def create_endpoint(self, body: CreateEndpointRequest) -> Endpoint:
        return await self._call("POST", "serverless", Endpoint, body)

    async def update_endpoint(self, endpoint_id: str, body: UpdateEndpointRequest) -> Endpoint:
        return await self._call("PATCH", f"serverless/{endpoint_id}", Endpoint, body)

    # -- any other read

    async def get(self, route: str, answer: type[M], params: Mapping[str, str] | None = None) -> M:
        """``GET route`` (e.g. ``catalog/gpus``) with query ``params``, parsed into ``answer``;
        retried until the read deadline like every GET."""
        return await self._call("GET", route, answer, params=params)

    # -- the request

    async def _call(
        self,
        method: Method,
        route: str,
        answer: type[M],
        body: BaseModel | None = None,
        *,
        params: Mapping[str, str] | None = None,
    ) -> M:
        where = f"{method} {self.path(route)}"
        url = self.base_url.join(self.path(route))
        if params:
            url = url.copy_merge_params(dict(params))
        headers = {"Accept": "application/json"}
        if self._send_key:
            assert self._key is not None
            headers["Authorization"] = f"Bearer {self._key}"
        content = body.model_dump_json(exclude_unset=True).encode() if body is not None else None
        if content is not None:
            headers["Content-Type"] = "application/json"

        async def attempt() -> httpx.Response:
            response = await self._client.request(method, url, headers=headers, content=content)
            response.raise_for_status()
            return response

        try:
            if method == "GET":
                deadline = time.monotonic() + self._read_deadline_s
                response = await self._policy.call(attempt, deadline=deadline, clock=time.monotonic)
            else:
                response = await self._policy.call(attempt, attempts=self._write_attempts)
        except httpx.HTTPStatusError as exc:
            raise self._refused(where, exc.response) from None
        except httpx.TransportError as exc:
            raise RestError(
                f"{where}: cannot reach RunPod's REST API at {self.base_url.host}"
                f" ({type(exc).__name__}), retried",
                hint="check the network, or VIDEOKIT_RUNPOD_REST_URL if you set it",
            ) from None
        try:
            return answer.model_validate_json(response.content)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first.get("loc", ())) or "(body)"
            raise RestError(
                f"{where}: RunPod's answer does not match the REST v2 schema videokit knows"
                f" ({field}: {first.get('msg', 'invalid')})",
                hint="upgrade videokit; if this persists, report it with this message",
            ) from None

    def _refused(self, where: str, response: httpx.Response) -> RestError:
        status = response.status_code
        detail = ""
        try:
            problem = ErrorResponse.model_validate_json(response.content)
            detail = problem.detail
            if problem.errors:
                detail += " (" + "; ".join(problem.errors[:5]) + ")"
        except ValidationError:
            detail = response.reason_phrase
        if 300 <= status < 400:
            detail = "a redirect, which is not followed"
        what = {401: "refused the API key", 403: "denied access", 404: "found nothing"}.get(
            status, "refused the request"
        )
        hint = _HINTS.get(status)
        if hint is None and (status >= 500 or status == 429):
            hint = "RunPod's API is failing or busy (retried): try again in a few minutes"
        message = f"{where}: RunPod {what} ({status}): {self._redact(detail)}"
        return RestError(message, status=status, hint=hint)

    def _redact(self, text: str) -> str:
        for secret in [self._key or "", *self._secrets]:
            if secret:
                text = text.replace(secret, "***")
        return text

    def __repr__(self) -> str:
        return f"RunPodRest({str(self.base_url)!r}, key={'sent' if self._send_key else 'not sent'})"


def json_body(body: BaseModel) -> dict[str, Any]:
    """What a request sends for ``body``: the fields that were set, as JSON values."""
    return body.model_dump(mode="json", exclude_unset=True)
