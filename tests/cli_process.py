"""The real ``videokit`` command in a subprocess, as a user runs it, for end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import make_image

# Three scenes in a chain, one with an edit: 1 edit + 3 animate jobs, small enough to be quick.
CAT_STORY = """\
    title: Cat
    reference: ref.png
    defaults: {width: 320, height: 192, fps: 16, frames: 9}
    scenes:
      - id: sit
        motion: the cat sits
      - id: hat
        edit: {prompt: "the same cat in a hat"}
        motion: the cat looks up
      - id: leave
        motion: the cat walks away
"""


def cat_project(folder: Path) -> Path:
    """``folder/cat.yaml`` (:data:`CAT_STORY`) and its reference image; returns the story."""
    folder.mkdir(parents=True, exist_ok=True)
    make_image(folder / "ref.png", (320, 192))
    story = folder / "cat.yaml"
    story.write_text(textwrap.dedent(CAT_STORY))
    return story


def start_videokit(folder: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    """``videokit ARGS`` started in ``folder`` (as :func:`run_videokit`), not waited for."""
    return subprocess.Popen(
        [sys.executable, "-m", "videokit", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=folder,
        env={**os.environ, "VIDEOKIT_WARMUP": "0", **env},
    )


def run_videokit(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``videokit ARGS`` in ``folder`` with the environment plus ``env``; no warm-up job (each
    test counts the jobs it expects)."""
    return subprocess.run(
        [sys.executable, "-m", "videokit", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=folder,
        env={**os.environ, "VIDEOKIT_WARMUP": "0", **env},
    )
