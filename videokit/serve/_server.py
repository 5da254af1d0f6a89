"""Running a ``videokit serve`` app with uvicorn: in a test thread, or as the server process.

:func:`running_server` serves an app on a free loopback port in a background thread (tests);
:class:`ReadyServer` is uvicorn's server with a callback once the port listens (the CLI).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator

import uvicorn
from starlette.types import ASGIApp

__all__ = ["ReadyServer", "configure_logging", "is_loopback", "running_server"]

log = logging.getLogger("videokit.serve")


@contextlib.contextmanager
def running_server(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout_s: float = 10.0,
    shutdown_timeout_s: float = 5.0,
) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread; yield its base URL.

    The socket is bound before uvicorn starts (port 0 picks a free port), so there is no race
    for the port. The yielded URL has no path: the RunPod API is at ``f"{base}/v2/{endpoint}/"``,
    and the official SDK wants ``runpod.endpoint_url_base = f"{base}/v2"``. The server (and
    the app's lifespan: queue, running jobs) is shut down when the block exits. uvicorn's own
    logging config is left alone (``log_config=None``), so this is quiet and safe in tests::

        with running_server(create_app(handler)) as base:
            httpx.post(f"{base}/v2/local/run", json={"input": {}})
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="on",
        # A pending runsync must not hold shutdown for its full wait.
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="videokit-serve", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("videokit serve: uvicorn exited during startup")
            if time.monotonic() > deadline:
                raise RuntimeError(f"videokit serve: not started after {startup_timeout_s} s")
            time.sleep(0.005)
        url_host = f"[{host}]" if family == socket.AF_INET6 else host
        yield f"http://{url_host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(shutdown_timeout_s)
        if thread.is_alive():
            server.force_exit = True
            thread.join(shutdown_timeout_s)
        sock.close()


class ReadyServer(uvicorn.Server):
    """uvicorn's server, calling ``on_ready`` once the port is listening."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None] | None) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._on_ready is not None:
            self._on_ready()


def configure_logging(level: str) -> None:
    """Log videokit.serve's lines to stderr, unless logging was configured already."""
    # Only when nobody (the CLI, the embedding app) configured logging already.
    if logging.getLogger().handlers or log.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(level.upper())


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
