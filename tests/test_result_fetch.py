"""Downloading an endpoint's result URL: checked, capped, retried, and never with a key."""

from __future__ import annotations

import asyncio
from typing import Literal

import httpx
import numpy as np
import pytest

from videokit.backends.kinds.fetch import ResultFetcher, ResultLost
from videokit.backends.retry import RetryPolicy
from videokit.errors import EndpointError
from videokit.media.images import encode_png

PNG = encode_png(np.zeros((8, 8, 3), np.uint8))


def fetcher(handler: httpx.MockTransport, cap: int) -> ResultFetcher:
    async def no_sleep(seconds: float) -> None:
        return None

    return ResultFetcher(
        retry=RetryPolicy(attempts=3, sleep=no_sleep), transport=handler, max_image_bytes=cap
    )


def get(
    answers: list[httpx.Response],
    media: Literal["image", "video"] = "image",
    cap: int = 1 << 20,
) -> tuple[bytes, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0) if len(answers) > 1 else answers[0]

    data = asyncio.run(
        fetcher(httpx.MockTransport(handler), cap).fetch(
            "https://image.runpod.ai/x/out.png?sig=s", media
        )
    )
    return data, seen


def test_a_result_is_fetched_after_transient_errors_without_any_key() -> None:
    data, seen = get(
        [
            httpx.Response(503),
            httpx.Response(200, content=PNG, headers={"Content-Type": "image/png"}),
        ]
    )
    assert data == PNG and len(seen) == 2
    assert all("authorization" not in r.headers for r in seen)


@pytest.mark.parametrize("status", [403, 404, 410])
def test_an_expired_result_url_is_a_lost_result(status: int) -> None:
    with pytest.raises(ResultLost, match=f"HTTP {status}"):
        get([httpx.Response(status, text="<Error>Request has expired</Error>")])


def test_a_result_of_the_wrong_kind_is_refused() -> None:
    with pytest.raises(EndpointError, match="'text/html', not image"):
        get([httpx.Response(200, content=b"<html>", headers={"Content-Type": "text/html"})])


def test_bytes_that_do_not_decode_are_refused() -> None:
    with pytest.raises(EndpointError, match="not a readable image"):
        get([httpx.Response(200, content=b"not a png", headers={"Content-Type": "image/png"})])
    with pytest.raises(EndpointError, match="not a readable video"):
        get(
            [httpx.Response(200, content=b"\0" * 64, headers={"Content-Type": "video/mp4"})],
            "video",
        )


def test_a_result_over_the_cap_is_not_downloaded() -> None:
    with pytest.raises(EndpointError, match="over 16 bytes"):
        get([httpx.Response(200, content=PNG, headers={"Content-Type": "image/png"})], cap=16)
