"""A whole story through ``videokit serve edit|animate --engine tiny``: the real diffusers
pipelines (Qwen-Image-Edit, Wan2.2 I2V) with tiny random weights, behind the RunPod API, in their
own processes, driven by the same client and CLI as the cloud."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from tests.conftest import make_image
from videokit.media.probe import probe_video

STORY = """\
title: Tiny models
reference: ref.png
defaults: {width: 128, height: 128, frames: 5, fps: 8}
scenes:
  - {id: hello, motion: a wave}
  - {id: suit, edit: now in a tuxedo, motion: adjusts his tie}
  - {id: walk, motion: walks away}
  - {id: alt, from: reference, motion: another take}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(worker: str) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "videokit",
        "serve",
        worker,
        "--engine",
        "tiny",
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    url = f"http://127.0.0.1:{port}/v2/{worker}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"{url}/health", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"`videokit serve {worker}` did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_story_renders_through_tiny_model_workers(tmp_path: Path) -> None:
    make_image(tmp_path / "ref.png", (200, 160))
    story = tmp_path / "story.yaml"
    story.write_text(STORY)
    with ExitStack() as stack:
        edit = stack.enter_context(serve("edit"))
        animate = stack.enter_context(serve("animate"))
        env = {**os.environ, "VIDEOKIT_EDIT_ENDPOINT": edit, "VIDEOKIT_ANIMATE_ENDPOINT": animate}
        cmd = [
            sys.executable,
            "-m",
            "videokit",
            "render",
            str(story),
            "--out",
            str(tmp_path / "out"),
            "--json",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[-1]["type"] == "render_done"
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["backend"] == "runpod"
    models = {manifest["scenes"][s]["animate"]["key"] for s in manifest["scenes"]}
    assert len(models) == 4
    info = probe_video(tmp_path / "out" / "final.mp4")
    assert (info.width, info.height, info.fps) == (128, 128, 8.0)
    assert info.frames == 5 + 5 + (5 - 1) + 5  # walk continues suit: its seam frame is dropped
    for scene in ("hello", "suit", "walk", "alt"):
        clip = probe_video(tmp_path / "out" / "scenes" / scene / "clip.mp4")
        assert clip.frames == 5 and clip.codec == "h264"
    store = Path(os.environ["VIDEOKIT_CACHE_DIR"]) / "store"  # the user's result store
    cache_meta = list((store / "animate").rglob("meta.json"))
    assert cache_meta and all("tiny-wan" in json.loads(m.read_text())["model"] for m in cache_meta)
    edit_meta = list((store / "edit").rglob("meta.json"))
    assert edit_meta and all("tiny-qwen" in json.loads(m.read_text())["model"] for m in edit_meta)
