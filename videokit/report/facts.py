"""What the report needs that ``manifest.json`` does not say, kept beside it in ``report/``.

``report/facts.json``: how the film's clips join (seam drops, crossfades), which scenes are
branches or stale, and the model that made each result. ``report/previous-manifest.json``: the
manifest of the latest *finished* render before the current one, kept when a render starts (the
manifest is rewritten as it goes), so the report can say what changed since then.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from pydantic import BaseModel, Field

from videokit.pipeline.manifest import Manifest

__all__ = [
    "FACTS_FILE",
    "PREVIOUS_FILE",
    "REPORT_DIR",
    "ClipJoin",
    "RenderFacts",
    "keep_previous",
    "load_facts",
    "load_previous",
    "save_facts",
]

REPORT_DIR = "report"
FACTS_FILE = f"{REPORT_DIR}/facts.json"
PREVIOUS_FILE = f"{REPORT_DIR}/previous-manifest.json"


class ClipJoin(BaseModel):
    """One clip on the film's timeline, as the stitcher placed it."""

    scene: str
    frames: int
    #: Frames dropped from its start: a continuous shot's first frame repeats the clip before.
    drop_head: int = 0
    #: Frames it overlaps the clip before (a crossfade); 0 is a cut.
    crossfade: int = 0


class RenderFacts(BaseModel):
    version: int = 1
    #: The render (manifest ``run.id``) these facts were written by.
    run_id: str
    fps: int
    #: The clips of the film at the manifest's ``final`` (``film_key``: its stitch key); empty
    #: when no film has been stitched with a known timeline.
    timeline: list[ClipJoin] = Field(default_factory=list)
    film_key: str | None = None
    #: Scenes rendered but not on the timeline.
    branches: list[str] = Field(default_factory=list)
    #: Scenes left as an earlier render made them (``--only``), with why.
    stale: dict[str, str] = Field(default_factory=dict)
    #: scene -> stage -> the model its result was made by, as the job reported it.
    models: dict[str, dict[str, str | None]] = Field(default_factory=dict)


def load_facts(workdir: Path) -> RenderFacts | None:
    try:
        return RenderFacts.model_validate_json((workdir / FACTS_FILE).read_bytes())
    except (OSError, ValueError):
        return None


def save_facts(workdir: Path, facts: RenderFacts) -> None:
    _write(workdir / FACTS_FILE, facts.model_dump_json(indent=2))


def load_previous(workdir: Path) -> Manifest | None:
    path = workdir / PREVIOUS_FILE
    if not path.is_file():
        return None
    previous = Manifest.load(path)
    return previous if previous.run is not None else None


def keep_previous(workdir: Path, manifest: Manifest) -> None:
    """Keep ``manifest`` (as a render found it) as the previous render, if that render finished.

    An unfinished one (interrupted, or with failed scenes) is the render the next one continues:
    the render before it stays the one to compare with.
    """
    if manifest.run is None or not manifest.run.finished:
        return
    _write(workdir / PREVIOUS_FILE, manifest.model_dump_json(indent=2))


def _write(path: Path, text: str) -> None:
    """Atomically: a killed render leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
