"""Write ``report.html`` into a work dir, atomically, from what the work dir holds."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from videokit.report.gather import gather
from videokit.report.html import render_html

__all__ = ["REPORT_NAME", "write_report"]

REPORT_NAME = "report.html"


def write_report(workdir: Path) -> Path:
    """(Re)write ``workdir/report.html`` from its manifest and ``report/`` facts; returns its
    absolute path. Raises :class:`~videokit.errors.ConfigError` when ``workdir`` holds no render.
    """
    html = render_html(gather(workdir))
    path = workdir.absolute() / REPORT_NAME
    tmp = path.with_name(f".{REPORT_NAME}.{os.getpid()}.tmp")
    try:
        tmp.write_text(html, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path
