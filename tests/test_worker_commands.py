"""``videokit workers`` and ``videokit logs`` against a loopback emulator of RunPod's REST v2."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.rest_ops_emulator import OpsEmulator, ops_emulator, worker
from tests.test_runpod import default_signals
from videokit.cli.app import app
from videokit.rest import RestError, RunPodRest
from videokit.rest.workers import FOLLOW_INTERVAL_S, LogEvent, WorkerLogs, list_workers

KEY = "rp_OPS_TEST_KEY_never_shown_42"
EP = "ep4nim8te"
T0 = datetime(2026, 9, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def emulator() -> Iterator[OpsEmulator]:
    with ops_emulator() as emu:
        emu.workers[EP] = [
            worker("w-old", "IDLE", T0),
            worker("w-new", "INITIALIZING", T0.replace(minute=5)),
            worker("w-sick", "UNHEALTHY", None, isStale=True),
        ]
        for n in range(5):
            emu.log(EP, "w-new", f"line {n}")
        emu.log(EP, "w-new", "container started", source="system")
        emu.log(EP, "w-old", "old worker line")
        yield emu


@pytest.fixture
def env(emulator: OpsEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> OpsEmulator:
    monkeypatch.chdir(tmp_path)  # no .env or videokit.toml of the developer's
    for name in list(os.environ):
        if name.startswith("VIDEOKIT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    monkeypatch.setenv("VIDEOKIT_RUNPOD_REST_URL", emulator.base_url)
    monkeypatch.setenv("VIDEOKIT_ANIMATE_ENDPOINT", EP)
    monkeypatch.setenv("VIDEOKIT_EDIT_ENDPOINT", "qwen-image-edit-2511")
    return emulator


def test_list_workers_sends_the_key_where_allowed() -> None:
    with ops_emulator(KEY) as emu:
        emu.workers[EP] = [worker("w1", "RUNNING", T0)]

        async def go() -> list[str]:
            async with RunPodRest(KEY, base_url=emu.base_url, allow_key_to_any_host=True) as rest:
                answer = await list_workers(rest, EP)
            return [w.status for w in answer.workers]

        assert asyncio.run(go()) == ["RUNNING"]
        assert emu.requests[-1].authorization == f"Bearer {KEY}"


def read(emu: OpsEmulator, worker_id: str, **kwargs: object) -> list[LogEvent]:
    async def go() -> list[LogEvent]:
        async with WorkerLogs(KEY, base_url=emu.base_url, allow_key_to_any_host=True) as logs:
            return [e async for e in logs.stream(EP, worker_id, **kwargs)]  # type: ignore[arg-type]

    return asyncio.run(go())


def test_logs_without_follow_print_the_backfill_and_stop(emulator: OpsEmulator) -> None:
    emulator.api_key = KEY
    lines = [e.event.line for e in read(emulator, "w-new", tail=3)]
    assert lines == ["line 3", "line 4", "container started"]
    assert emulator.seen("/logs")[-1].query["tail"] == "3"
    # A stream that stays open ends the read once it is quiet.
    emulator.hold_s = 30
    started = time.monotonic()
    assert len(read(emulator, "w-new", quiet_s=0.3)) == 6
    assert time.monotonic() - started < 5


def test_a_gone_worker_is_a_clear_error(emulator: OpsEmulator) -> None:
    with pytest.raises(RestError, match="404") as caught:
        read(emulator, "w-gone")
    assert "videokit workers" in (caught.value.hint or "")


def test_follow_resumes_after_the_last_event_at_most_once_a_second(
    emulator: OpsEmulator,
) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        emulator.log(EP, "w-old", f"new {len(waits)}")  # the worker logs while we wait

    async def go() -> list[str]:
        got: list[str] = []
        async with WorkerLogs(None, base_url=emulator.base_url, sleep=sleep) as logs:
            async for item in logs.stream(EP, "w-old", follow=True):
                got.append(item.event.line)
                if len(got) == 4:
                    break
        return got

    assert asyncio.run(go()) == ["old worker line", "new 1", "new 2", "new 3"]
    streams = emulator.seen("/logs")
    assert streams[0].last_event_id is None
    assert all(s.last_event_id for s in streams[1:])  # resumed, so nothing is printed twice
    assert all(FOLLOW_INTERVAL_S - 0.5 < w <= FOLLOW_INTERVAL_S for w in waits)
    assert all(s.authorization is None for s in streams)  # no key to a host not RunPod's


def test_workers_command_lists_their_states(env: OpsEmulator) -> None:
    result = CliRunner().invoke(app, ["workers", "animate"])
    assert result.exit_code == 0, result.output
    for text in ("w-old", "IDLE", "w-new", "INITIALIZING", "w-sick", "UNHEALTHY", "stale"):
        assert text in result.output
    assert env.seen("/workers")[-1].path == f"/v2/serverless/{EP}/workers"
    assert all(r.authorization is None for r in env.requests)  # loopback: the key stays home

    result = CliRunner().invoke(app, ["workers", "animate", "--json"])
    assert result.exit_code == 0, result.output
    assert '"summary"' in result.output and '"UNHEALTHY"' in result.output


def test_workers_and_logs_of_a_public_endpoint_say_there_are_none(env: OpsEmulator) -> None:
    for command in (["workers", "edit"], ["logs", "edit"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, result.output
        assert "Public Endpoint" in result.output and "no worker list or logs" in result.output
    assert env.requests == []


def test_workers_without_a_key_is_a_clear_error(
    env: OpsEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RUNPOD_API_KEY")
    result = CliRunner().invoke(app, ["workers", "animate"])
    assert result.exit_code == 2
    assert "RUNPOD_API_KEY is not set" in result.output and "Traceback" not in result.output
    assert env.requests == []


def test_logs_command_picks_the_latest_worker(env: OpsEmulator) -> None:
    result = CliRunner().invoke(app, ["logs", "animate", "-n", "2"])
    assert result.exit_code == 0, result.output
    assert "logs of worker w-new (INITIALIZING)" in result.output
    assert "line 4" in result.output and "[system] container started" in result.output
    assert "line 3" not in result.output


def test_logs_follow_streams_then_stops_on_ctrl_c(env: OpsEmulator, tmp_path: Path) -> None:
    env.hold_s, env.tick_s = 60.0, 0.1  # one long stream, a new line every 0.1 s
    proc = subprocess.Popen(
        [sys.executable, "-m", "videokit", "logs", "animate", "--worker", "w-new", "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
        cwd=tmp_path,
        preexec_fn=default_signals,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "tick" in line and len(lines) >= 9:
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert "line 0" in lines[0]
    assert any("tick" in line for line in lines)
