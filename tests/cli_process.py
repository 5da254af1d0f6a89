"""The real ``videokit`` command in a subprocess, as a user runs it, for end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


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
