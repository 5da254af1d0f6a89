"""Resume: SIGKILL a render mid-way; running it again redoes only the unfinished scenes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import make_image
from videokit.media.probe import probe_video

CHAIN = 6


def test_sigkill_then_resume(tmp_path: Path) -> None:
    make_image(tmp_path / "ref.png", (832, 480))
    scenes = "\n".join(
        f"  - {{id: s{i}, motion: shot {i}}}" for i in range(CHAIN)
    )  # a chain: each scene starts from the previous one's last frame
    story = tmp_path / "chain.yaml"
    story.write_text(
        textwrap.dedent(
            """\
            title: Chain
            reference: ref.png
            defaults: {width: 832, height: 480, frames: 81}
            scenes:
            """
        )
        + scenes
        + "\n"
    )
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "videokit", "render", str(story), "--out", str(out), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    finished_before_kill: list[str] = []
    for line in proc.stdout:
        event = json.loads(line)
        if event["type"] == "scene_done":
            finished_before_kill.append(event["scene"])
            if len(finished_before_kill) == 2:
                os.kill(proc.pid, signal.SIGKILL)
                break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "final.mp4").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    unfinished = [
        s
        for s in (f"s{i}" for i in range(CHAIN))
        if manifest["scenes"].get(s, {}).get("status") != "done"
    ]
    assert unfinished, "the render finished before it was killed; the test proves nothing"

    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    events = [json.loads(line) for line in resumed.stdout.splitlines()]
    started = {e["scene"] for e in events if e["type"] == "scene_started"}
    cached = {e["scene"] for e in events if e["type"] == "scene_done" and e["cached"]}
    assert set(finished_before_kill) <= cached
    assert not started & set(finished_before_kill), "a finished scene was rendered again"
    assert started <= set(unfinished) and started
    assert probe_video(out / "final.mp4").frames == 81 + (CHAIN - 1) * 80
