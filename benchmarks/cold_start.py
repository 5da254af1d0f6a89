"""How long a worker takes from a cold start to its first answer: container, load, first job.

Locally (``--local``, the default) the worker starts as its image starts it, ``python -u
workers/<stage>/handler.py`` (the image's CMD), in RunPod's local mode with one real job
(``--test_input``), and the time from process start is split at what the worker logs: start and
imports (interpreter, runpod SDK, torch, diffusers) until the engine load begins; the load (weights,
LoRA, speed options and warm-up step: the ``videokit.<model>.load`` record's timings); the first
job until it is answered (the ``videokit.job`` record). There is no container locally. Against
RunPod (``--endpoint ID``, ``RUNPOD_API_KEY`` from the environment) a ``{"warmup": true}`` job
wakes an endpoint scaled to zero: its ``delayTime`` holds queue, container start and load, and a
videokit worker's answer reports the load and the warm-up step within it, which split it; then
the real job's ``executionTime`` is the first job.

    python benchmarks/cold_start.py --tiny                   # tiny engine on the CPU (a test)
    python benchmarks/cold_start.py --stage edit             # real engine: a GPU and the weights
    RUNPOD_API_KEY=... python benchmarks/cold_start.py --endpoint abc123 --stage animate
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["first_job", "main", "measure_endpoint", "measure_local", "table"]

# Job sizes: the goals' jobs on the real engine, the smallest the tiny engine takes.
_SIZES = {
    ("animate", False): {"width": 832, "height": 480, "frames": 81, "steps": 4},
    ("animate", True): {"width": 128, "height": 128, "frames": 5, "steps": 4},
    ("edit", False): {"width": 1024, "height": 1024, "steps": 8},
    ("edit", True): {"width": 128, "height": 128, "steps": 8},
}
# Linux refuses a single argument over 128 KiB; the job travels in one (--test_input).
_MAX_ARGUMENT = 120_000
_LOAD_EVENT = re.compile(r"^videokit\.(wan|qwen)\.load$")
_ENGINE_JOB_EVENT = re.compile(r"^videokit\.(wan|qwen)\.job$")
_FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")


def _picture(width: int, height: int) -> str:
    """A flat synthetic input as base64 PNG (a few KB: it travels on the command line)."""
    img = Image.new("RGB", (width, height), (70, 110, 150))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, height * 2 // 3, width, height), fill=(60, 120, 60))
    draw.ellipse((width // 3, height // 5, width // 2, height // 2), fill=(250, 200, 40))
    out = io.BytesIO()
    img.save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


def first_job(stage: str, *, tiny: bool) -> dict[str, Any]:
    """The native job a cold worker answers first: the goal's size (tiny: the smallest)."""
    size = _SIZES[(stage, tiny)]
    image = {"base64": _picture(size["width"], size["height"])}
    if stage == "edit":
        return {"kind": "edit", "images": [image], "prompt": "make it dusk", "seed": 0, **size}
    return {"kind": "animate", "image": image, "prompt": "a slow wave", "seed": 0, **size}


# -- local -----------------------------------------------------------------------------------------


def _records(lines: Sequence[tuple[float, str]]) -> list[tuple[float, dict[str, Any]]]:
    """The JSON records among stderr's lines, each with the moment it arrived."""
    found = []
    for at, line in lines:
        if line.startswith('{"event":'):
            try:
                found.append((at, json.loads(line)))
            except ValueError:
                continue
    return found


def _first(
    records: Sequence[tuple[float, dict[str, Any]]], match: Callable[[str], bool]
) -> tuple[float, dict[str, Any]] | None:
    return next(((at, r) for at, r in records if match(str(r.get("event", "")))), None)


def measure_local(
    stage: str, *, tiny: bool, timeout: float = 3600, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Start the worker cold, time it until its first job is answered, and split the time.

    Each stderr line is stamped as it arrives (the worker writes unbuffered, ``-u``). The load
    record says how long the load took in-process, so the load began that long before it
    arrived: everything before is start and imports.
    """
    job = first_job(stage, tiny=tiny)
    test_input = json.dumps({"input": job})
    if len(test_input) > _MAX_ARGUMENT:
        raise SystemExit(f"the job is {len(test_input)} characters: too long for --test_input")
    argv = [sys.executable, "-u", f"workers/{stage}/handler.py", "--test_input", test_input]
    child_env = dict(os.environ if env is None else env)
    child_env["VIDEOKIT_ENGINE"] = "tiny" if tiny else "diffusers"
    if tiny:
        # A real worker warms up at load (the default); the tiny engine only when asked.
        child_env.setdefault("VIDEOKIT_WARMUP_STEP", "on")
    lines: list[tuple[float, str]] = []
    out: list[str] = []

    def read(stream: Any, into: list[Any], stamped: bool) -> None:
        for line in stream:
            into.append((time.perf_counter(), line.rstrip("\n")) if stamped else line)

    started = time.perf_counter()
    process = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    readers = [
        threading.Thread(target=read, args=(process.stderr, lines, True), daemon=True),
        threading.Thread(target=read, args=(process.stdout, out, False), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise SystemExit(f"the worker did not answer within {timeout:.0f} s") from None
    for reader in readers:
        reader.join()
    records = _records(lines)
    load = _first(records, lambda event: bool(_LOAD_EVENT.match(event)))
    answered = _first(records, lambda event: event == "videokit.job")
    if code != 0 or load is None or answered is None:
        tail = [text for _, text in lines if text.strip()][-5:]
        raise SystemExit(f"the worker failed (exit code {code}):\n" + "\n".join(tail))
    engine_job = _first(records, lambda event: bool(_ENGINE_JOB_EVENT.match(event)))
    loaded_at, load_record = load
    answered_at, job_record = answered
    timings = load_record.get("timings_ms") or {}
    load_ms = load_record.get("load_ms", timings.get("total"))  # Qwen's record, Wan's
    if not isinstance(load_ms, int | float):
        raise SystemExit(f"the load record has no load time: {load_record}")
    load_s = load_ms / 1000
    imports_ready = loaded_at - started - load_s
    warmup = load_record.get("warmup") or {}
    return {
        "mode": "local",
        "stage": stage,
        "engine": child_env["VIDEOKIT_ENGINE"],
        "command": f"python -u workers/{stage}/handler.py --test_input <job>",
        "device": load_record.get("device"),
        "job": {k: v for k, v in job.items() if k not in ("image", "images")},
        "phases_s": {
            "container": None,  # no container locally
            "start_imports": round(imports_ready, 3),
            "load": round(load_s, 3),
            "first_job": round(answered_at - loaded_at, 3),
        },
        # Seconds since the process started; ordered by construction of a cold start.
        "marks_s": {
            "imports_ready": round(imports_ready, 3),
            "loaded": round(loaded_at - started, 3),
            "answered": round(answered_at - started, 3),
        },
        "total_s": round(answered_at - started, 3),
        "load": {
            "timings_ms": timings,
            "prepare_s": timings["prepare"] / 1000 if "prepare" in timings else None,
            "warmup_s": warmup["ms"] / 1000 if "ms" in warmup else None,
            "options": load_record.get("options"),
            "attention": load_record.get("attention"),
        },
        "first_job": {
            "status": job_record.get("status"),
            "handler_ms": (job_record.get("timings_ms") or {}).get("total"),
            "engine_timings_ms": (engine_job[1].get("timings_ms") if engine_job else None),
        },
    }


# -- RunPod ----------------------------------------------------------------------------------------


def _submit(
    client: httpx.Client,
    url: str,
    job: Mapping[str, Any],
    *,
    poll_s: float,
    timeout: float,
    sleep: Callable[[float], None],
) -> tuple[str, dict[str, Any]]:
    """``/run`` one job and poll ``/status`` until it ends; its id and last status body."""
    submitted = time.monotonic()
    reply = client.post(f"{url}/run", json={"input": dict(job)})
    reply.raise_for_status()
    job_id = str(reply.json()["id"])
    while time.monotonic() - submitted < timeout:
        status = client.get(f"{url}/status/{job_id}")
        status.raise_for_status()
        body: dict[str, Any] = status.json()
        if body.get("status") in _FINAL:
            return job_id, body
        sleep(poll_s)
    raise SystemExit(f"job {job_id} did not finish within {timeout:.0f} s (cancel it)")


def _ms(body: Mapping[str, Any], name: str) -> float | None:
    value = body.get(name)
    return float(value) if isinstance(value, int | float) else None


def measure_endpoint(
    endpoint: str,
    job: Mapping[str, Any],
    *,
    client: httpx.Client,
    base_url: str,
    poll_s: float = 2.0,
    timeout: float = 3600,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Start a RunPod endpoint cold with a ``{"warmup": true}`` job, then time ``job`` on it.

    ``/health`` first: a worker already up means the warm-up may not meet a cold one, which the
    result notes. The warm-up's ``delayTime`` holds queue, container start and the engine load;
    a videokit worker's answer reports its load (``load_ms``) and the warm-up step within it
    (``warmup_ms``), which split it. The job's ``executionTime`` is then the first real job.
    """
    url = f"{base_url.rstrip('/')}/{endpoint}"
    notes: list[str] = []
    health = client.get(f"{url}/health")
    health.raise_for_status()
    workers = health.json().get("workers") or {}
    up = {k: v for k, v in workers.items() if isinstance(v, int) and v > 0 and k != "throttled"}
    if up:
        shown = ", ".join(f"{k} {v}" for k, v in sorted(up.items()))
        notes.append(f"not scaled to zero when sent ({shown}): maybe not a cold start")
    started = time.monotonic()
    warm_id, warm = _submit(
        client, url, {"warmup": True}, poll_s=poll_s, timeout=timeout, sleep=sleep
    )
    job_id, body = _submit(client, url, job, poll_s=poll_s, timeout=timeout, sleep=sleep)
    round_trip = time.monotonic() - started
    delay = _ms(warm, "delayTime")
    raw = warm.get("output")
    answer: dict[str, Any] = raw if isinstance(raw, dict) else {}
    load_ms, warmup_ms = _ms(answer, "load_ms"), _ms(answer, "warmup_ms")
    phases: dict[str, float | None] = {"container": None, "load": None}
    if delay is not None and load_ms is not None:
        phases["queue_container"] = round((delay - load_ms) / 1000, 3)
        phases["load"] = round((load_ms - (warmup_ms or 0)) / 1000, 3)
        phases["first_step"] = None if warmup_ms is None else round(warmup_ms / 1000, 3)
    else:
        phases["queue_container_load"] = None if delay is None else delay / 1000
        notes.append(
            "delayTime holds queue wait, container start (image pull, interpreter, imports) and "
            "the engine load together; the warm-up answer reports no load time (not a videokit "
            "worker?), so they cannot be separated here"
        )
    execution = _ms(body, "executionTime")
    phases["first_job"] = None if execution is None else execution / 1000
    raw_output = body.get("output")
    output: dict[str, Any] = raw_output if isinstance(raw_output, dict) else {}
    inference = _ms(output, "inference_ms")
    return {
        "mode": "runpod",
        "endpoint": endpoint,
        "warmup_job_id": warm_id,
        "job_id": job_id,
        "status": body.get("status"),
        "delay_time_ms": delay,
        "execution_time_ms": execution,
        "phases_s": phases,
        "inference_s": None if inference is None else inference / 1000,
        "round_trip_s": round(round_trip, 3),
        "notes": notes,
    }


# -- output ----------------------------------------------------------------------------------------


def _s(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "-"


def table(result: Mapping[str, Any]) -> list[str]:
    """A small Markdown table of :func:`measure_local`'s or :func:`measure_endpoint`'s result."""
    phases = result["phases_s"]
    rows = ["| phase | s | what it holds |", "|---|---|---|"]
    if result["mode"] == "local":
        load, job = result["load"], result["first_job"]
        engine = job.get("engine_timings_ms") or {}
        split = ", ".join(
            f"{name} {_s(engine[name] / 1000)}"
            for name in ("text_encode", "condition", "denoise", "decode")
            if name in engine
        )
        title = (
            f"cold start, local: {result['stage']} worker ({result['command']}), engine "
            f"{result['engine']} on {result['device']}"
        )
        rows += [
            "| container | n/a locally | image pull and container start: only RunPod's "
            "delayTime has it (--endpoint) |",
            f"| start + imports | {_s(phases['start_imports'])} | process start until the "
            "engine load begins: interpreter, runpod SDK, torch, diffusers |",
            f"| load | {_s(phases['load'])} | weights, LoRA, prepare {_s(load['prepare_s'])} "
            f"(warm-up step {_s(load['warmup_s'])}) |",
            f"| first job | {_s(phases['first_job'])} | engine loaded until the first job is "
            f"answered (handler {_s((job['handler_ms'] or 0) / 1000)}: {split or '-'}) |",
            f"| total | {_s(result['total_s'])} | process start until the first job is answered |",
        ]
    else:
        title = f"cold start, RunPod endpoint {result['endpoint']} (job {result['job_id']})"
        if "queue_container" in phases:
            rows += [
                f"| queue + container | {_s(phases['queue_container'])} | the warm-up job's "
                "delayTime less the load the worker reported |",
                f"| load | {_s(phases['load'])} | reported by the worker: weights, LoRA, options |",
                f"| first step | {_s(phases['first_step'])} | the warm-up step at load |",
            ]
        else:
            rows.append(
                f"| queue + container + load | {_s(phases['queue_container_load'])} | "
                "delayTime: not separable (see the notes) |"
            )
        rows.append(
            f"| first job | {_s(phases['first_job'])} | its executionTime, on the worker the "
            f"warm-up started (engine {_s(result['inference_s'])}) |"
        )
        rows.append(f"| round trip | {_s(result['round_trip_s'])} | submitted until finished |")
    notes = [f"note: {note}" for note in result.get("notes", [])]
    return [title, "", *rows, *notes]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--local", action="store_true", help="start the worker here (default)")
    where.add_argument("--endpoint", metavar="ID", help="a RunPod endpoint scaled to zero")
    parser.add_argument("--tiny", action="store_true", help="the tiny engine on the CPU")
    parser.add_argument("--stage", choices=("animate", "edit"), default="animate")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds (default 3600)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    if args.endpoint:
        from videokit.backends.runpod.config import DEFAULT_BASE_URL

        key = os.environ.get("RUNPOD_API_KEY", "").strip()
        if not key:
            print(
                "cold_start.py: --endpoint needs RUNPOD_API_KEY in the environment", file=sys.stderr
            )
            return 2
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(headers=headers, timeout=60) as client:
            result = measure_endpoint(
                args.endpoint,
                first_job(args.stage, tiny=args.tiny),
                client=client,
                base_url=DEFAULT_BASE_URL,
                timeout=args.timeout,
            )
    else:
        result = measure_local(args.stage, tiny=args.tiny, timeout=args.timeout)
    print("\n".join(table(result)), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
