"""The one retry predicate and wait policy that every network call goes through."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from videokit.backends.retry import RetryPolicy, is_retryable, retry_after_seconds


def status_error(code: int, headers: dict[str, str] | None = None) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "https://api.example/v2/x/status/1")
    response = httpx.Response(code, headers=headers, request=request)
    return httpx.HTTPStatusError(f"HTTP {code}", request=request, response=response)


@pytest.mark.parametrize("code", [408, 425, 429, 500, 502, 503, 504, 599])
def test_retryable_statuses(code: int) -> None:
    assert is_retryable(status_error(code))


@pytest.mark.parametrize("code", [400, 401, 403, 404, 409, 413, 422])
def test_client_errors_are_final(code: int) -> None:
    assert not is_retryable(status_error(code))


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("dropped"),
        httpx.ReadError("reset"),
        httpx.PoolTimeout("busy"),
    ],
)
def test_transport_errors_are_retryable(exc: Exception) -> None:
    assert is_retryable(exc)


def test_other_exceptions_are_not_retried() -> None:
    assert not is_retryable(ValueError("bad input"))
    assert not is_retryable(KeyError("x"))


def test_retry_after_seconds_and_http_date() -> None:
    assert retry_after_seconds(status_error(429, {"Retry-After": "3"})) == 3.0
    now = datetime(2026, 1, 1, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert retry_after_seconds(status_error(503, {"Retry-After": later}), now=lambda: now) == 7.0
    assert retry_after_seconds(status_error(429, {"Retry-After": "soon"})) is None
    assert retry_after_seconds(status_error(429)) is None
    assert retry_after_seconds(httpx.ConnectError("x")) is None


def test_wait_honours_retry_after_and_otherwise_backs_off_with_jitter() -> None:
    policy = RetryPolicy(base_s=0.5, cap_s=4.0, rng=random.Random(1))
    hinted = policy.wait_seconds(1, status_error(429, {"Retry-After": "2"}))
    assert 2.0 <= hinted <= 2.5
    waits = [policy.wait_seconds(n, httpx.ConnectError("x")) for n in range(1, 9)]
    ceilings = [min(4.0, 0.5 * 2 ** (n - 1)) for n in range(1, 9)]
    assert all(0 <= w <= c for w, c in zip(waits, ceilings, strict=True))
    assert len(set(waits)) == len(waits)  # jitter: no two equal
    capped = RetryPolicy(max_retry_after_s=5.0, rng=random.Random(1))
    assert capped.wait_seconds(1, status_error(429, {"Retry-After": "3600"})) <= 5.25


def test_call_retries_transient_failures_then_succeeds() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    outcomes: list[Exception | str] = [
        httpx.ConnectError("refused"),
        status_error(503),
        status_error(429, {"Retry-After": "1"}),
        "ok",
    ]
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        outcome = outcomes[calls]
        calls += 1
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    retried: list[int] = []
    policy = RetryPolicy(attempts=5, sleep=sleep, rng=random.Random(0))
    result = asyncio.run(policy.call(flaky, on_retry=lambda n, exc, wait: retried.append(n)))
    assert result == "ok" and calls == 4
    assert retried == [1, 2, 3]
    assert len(slept) == 3 and slept[2] >= 1.0  # the last wait honoured Retry-After


def test_call_gives_up_after_the_attempts_and_reraises() -> None:
    async def sleep(seconds: float) -> None:
        return None

    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise status_error(502)

    with pytest.raises(httpx.HTTPStatusError):
        asyncio.run(RetryPolicy(attempts=3, sleep=sleep).call(down))
    assert calls == 3


def test_call_does_not_retry_final_errors() -> None:
    calls = 0

    async def unauthorized() -> None:
        nonlocal calls
        calls += 1
        raise status_error(401)

    with pytest.raises(httpx.HTTPStatusError):
        asyncio.run(RetryPolicy(attempts=5).call(unauthorized))
    assert calls == 1


class Clock:
    """Fake monotonic time that advances only when the policy sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_with_a_deadline_a_call_retries_until_the_deadline_not_a_count() -> None:
    clock = Clock()
    calls = 0

    async def storm() -> str:
        nonlocal calls
        calls += 1
        if clock.now < 30:
            raise status_error(503)
        return "ok"

    policy = RetryPolicy(attempts=3, base_s=0.5, cap_s=2.0, sleep=clock.sleep, clock=clock)
    assert asyncio.run(policy.call(storm, deadline=60.0)) == "ok"
    assert calls > 3 and 30 <= clock.now < 60

    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise status_error(503)

    clock.now = 0.0
    with pytest.raises(httpx.HTTPStatusError):
        asyncio.run(policy.call(down, deadline=10.0))
    # It stopped at the deadline: no wait went past it, and it tried once more at the end.
    assert clock.now == pytest.approx(10.0, abs=1e-9) and calls > 3


def test_retry_after_is_capped_by_the_deadline_not_a_fixed_minute() -> None:
    clock = Clock()
    answers = [status_error(429, {"Retry-After": "90"}), status_error(429, {"Retry-After": "90"})]

    async def limited() -> str:
        if answers:
            raise answers.pop(0)
        return "ok"

    policy = RetryPolicy(sleep=clock.sleep, clock=clock, max_retry_after_s=60.0)
    # A job deadline five minutes away: a 90 s Retry-After is honoured in full...
    assert asyncio.run(policy.call(limited, deadline=300.0)) == "ok"
    assert all(90 <= s <= 90.25 for s in clock.slept)
    # ...and one 20 s away caps it at 20 s.
    clock.now, clock.slept = 0.0, []
    answers.append(status_error(429, {"Retry-After": "90"}))
    assert asyncio.run(policy.call(limited, deadline=20.0)) == "ok"
    assert clock.slept == [pytest.approx(20.0)]


def test_sync_and_async_calls_share_one_policy() -> None:
    slept: list[float] = []
    outcomes: list[Exception | str] = [httpx.ReadError("reset"), status_error(502), "ok"]

    def flaky() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    retried: list[int] = []
    policy = RetryPolicy(attempts=5, sleep_sync=slept.append, rng=random.Random(0))
    assert policy.call_sync(flaky, on_retry=lambda n, exc, wait: retried.append(n)) == "ok"
    assert retried == [1, 2] and len(slept) == 2

    calls = 0

    def unauthorized() -> None:
        nonlocal calls
        calls += 1
        raise status_error(401)

    with pytest.raises(httpx.HTTPStatusError):
        policy.call_sync(unauthorized)
    assert calls == 1

    def down() -> None:
        raise status_error(503)

    slept.clear()
    with pytest.raises(httpx.HTTPStatusError):
        RetryPolicy(attempts=3, sleep_sync=slept.append).call_sync(down)
    assert len(slept) == 2
