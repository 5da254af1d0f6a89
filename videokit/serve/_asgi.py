"""The FastAPI app class of ``videokit serve``, with HTTP faults injected at its outermost layer.

Faults are applied here rather than in a middleware because dropping a connection needs
uvicorn's own ``send`` (to reach the socket); Starlette's middlewares wrap it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Message, Receive, Scope, Send

from videokit.serve.faults import FaultInjector

__all__ = ["ServeApp"]

log = logging.getLogger("videokit.serve")


class ServeApp(FastAPI):
    """FastAPI with HTTP fault injection (429, 5xx, slow, dropped) on the ``/v2/`` routes."""

    fault_injector: FaultInjector | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        injector = self.fault_injector
        if injector is None or scope["type"] != "http" or not scope["path"].startswith("/v2/"):
            await super().__call__(scope, receive, send)
            return
        kind = injector.http_fault(f"{scope['method']} {scope['path']}")
        if kind is None:
            await super().__call__(scope, receive, send)
            return
        log.info("fault %s injected method=%s path=%s", kind, scope["method"], scope["path"])
        config = injector.config
        response: Response
        if kind == "429":
            # Whole seconds: Retry-After is delta-seconds, and urllib3 (the runpod SDK's retry)
            # rejects a fractional value as an invalid header.
            retry_after = str(max(0, math.ceil(config.retry_after_s)))
            response = JSONResponse(
                {"error": "Too Many Requests (injected)"},
                status_code=429,
                headers={"Retry-After": retry_after},
            )
            await response(scope, receive, send)
        elif kind == "5xx":
            status = injector.server_error_status()
            # 502/503 usually come from a proxy in front of the API, as text, not JSON; clients
            # must cope with both.
            if status == 500:
                response = JSONResponse({"error": "Internal Server Error (injected)"}, status)
            else:
                response = PlainTextResponse(f"{status} (injected)", status)
            await response(scope, receive, send)
        elif kind == "slow":
            await asyncio.sleep(config.slow_s)
            await super().__call__(scope, receive, send)
        else:  # "drop"
            await _drop_after_processing(super().__call__, scope, receive, send)


class _DroppedConnectionError(Exception):
    """Raised (fallback only) to make a server that is not uvicorn abort the response."""


async def _drop_after_processing(
    app: Callable[[Scope, Receive, Send], Awaitable[None]],
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    """Process the request, throw the response away and close the socket without a reply."""

    async def swallow(message: Message) -> None:
        return None

    await app(scope, receive, swallow)
    # uvicorn's send is a bound method of its request cycle, which holds the transport.
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is not None and hasattr(transport, "close"):
        transport.close()
        # Let uvicorn see the disconnect before we return; otherwise it would notice that no
        # response was started and try to send a 500 on the closing socket.
        for _ in range(100):
            if getattr(cycle, "disconnected", True):
                break
            await asyncio.sleep(0.001)
        return
    # Not uvicorn (or a logging wrapper around send): start a response and abort it, which any
    # ASGI server turns into a closed connection mid-response.
    await send({"type": "http.response.start", "status": 200, "headers": []})
    raise _DroppedConnectionError("injected fault: connection dropped")
