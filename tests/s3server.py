"""A real S3 server for tests: moto's server in its own process, on 127.0.0.1 and a free port.

Import the fixture into a test module (or list this module in ``pytest_plugins``)::

    from tests.s3server import S3Server, s3_server  # noqa: F401

    def test_something(s3_server: S3Server) -> None:
        endpoint_url, bucket, client = s3_server

Requests go over real HTTP, so presigned URLs can be fetched with plain httpx exactly as a worker
would. A separate process (rather than moto's in-process mocks) keeps the server independent of
anything a test patches in botocore. One process serves the whole test session however many
modules import the fixture (it starts in about half a second); each importing module gets its own
bucket, and :meth:`S3Server.new_bucket` makes another for a test that needs an empty one.

Credentials are the dummy ``testing``/``testing``, given to the client directly: the process
environment is not touched. moto does not check signatures, so any keys would do.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import boto3
import httpx
import pytest
from botocore.config import Config

__all__ = ["S3Server", "make_client", "s3_server"]

HOST = "127.0.0.1"
ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"
REGION = "us-east-1"
_START_TIMEOUT_S = 20.0
_START_TRIES = 3


class S3Server(NamedTuple):
    """What the fixture yields; unpacks as ``endpoint_url, bucket, client``."""

    endpoint_url: str
    bucket: str
    client: Any  # a boto3 S3 client pointed at the server

    def new_bucket(self) -> str:
        """Create and return a fresh, empty bucket on the same server."""
        return _create_bucket(self.client)


def make_client(endpoint_url: str) -> Any:
    """A boto3 S3 client for the test server: dummy keys, path-style, short timeouts."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            connect_timeout=5,
            read_timeout=30,
            # A local server either works or is broken: fail fast instead of backing off.
            retries={"mode": "standard", "total_max_attempts": 2},
        ),
    )


def _create_bucket(client: Any) -> str:
    name = f"videokit-test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return name


def _free_port() -> int:
    # The port is free when we look; another process could take it before moto binds, which
    # `_start` handles by trying again.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class _MotoProcess:
    def __init__(self) -> None:
        self.log = Path(tempfile.mkstemp(prefix="videokit-moto-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None
        self.endpoint_url = ""

    def start(self) -> None:
        problems: list[str] = []
        for _ in range(_START_TRIES):
            port = _free_port()
            self.endpoint_url = f"http://{HOST}:{port}"
            with self.log.open("wb") as log:
                # Output goes to a file, not a pipe: nobody reads a pipe, and a full one would
                # block the server.
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            if self._wait_ready():
                return
            self.stop()
            problems.append(self._log_tail())
        raise RuntimeError(
            f"moto server did not start after {_START_TRIES} tries:\n" + "\n---\n".join(problems)
        )

    def _wait_ready(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + _START_TIMEOUT_S
        # trust_env=False: a proxy configured in the environment must not intercept loopback.
        with httpx.Client(trust_env=False, timeout=1.0) as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False
                try:
                    http.get(f"{self.endpoint_url}/moto-api/data.json")
                    return True
                except httpx.TransportError:
                    time.sleep(0.05)
        return False

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            # The server keeps no state worth a graceful stop, and it would otherwise wait for
            # idle keep-alive connections: do not hold up the end of the session for it.
            process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def close(self) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            self.log.unlink()


# One server per test process, shared by every module that imports the fixture: each import
# registers its own session fixture, and a reference count stops the server after the last one.
_lock = threading.Lock()
_server: _MotoProcess | None = None
_users = 0


def _acquire() -> str:
    global _server, _users
    with _lock:
        if _server is None:
            server = _MotoProcess()
            try:
                server.start()
            except BaseException:
                server.close()
                raise
            _server = server
            # Should the session die without running fixture teardowns, do not leave a server.
            atexit.register(server.close)
        _users += 1
        return _server.endpoint_url


def _release() -> None:
    global _server, _users
    with _lock:
        _users -= 1
        if _users == 0 and _server is not None:
            _server.close()
            _server = None


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A running moto S3 server with a bucket: ``(endpoint_url, bucket, boto3_client)``."""
    endpoint_url = _acquire()
    try:
        client = make_client(endpoint_url)
        yield S3Server(endpoint_url, _create_bucket(client), client)
        client.close()
    finally:
        _release()
