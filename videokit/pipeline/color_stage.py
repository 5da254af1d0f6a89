"""Colour matching of an animated clip, between its animate stage and the scenes it starts.

The model's clip stays in the store as it was made, under a key that does not depend on
``color``. The corrected clip and last frame are an entry of their own (stage ``color``), keyed by
the model clip's key, the anchor's bytes and the settings: with matching off nothing changes at
all, and turning it on or off, or changing its strength, never pays for a job again. Matching runs
on the CPU (no job), once: a corrected entry is reused like any cached result, and one the store
lost is put back from the work dir's own scene files when they still hash the same (so the scenes
downstream keep their keys). While matching is on, ``scenes/<id>/`` also links the model's own
files (``clip-uncorrected.mp4``, ``last-uncorrected.png``): what the stage runner restores a lost
model clip from.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from videokit.media.color import ColorTransfer, LabStats, lab_stats
from videokit.media.color_clip import CLIP_CRF, CLIP_PRESET, match_clip, match_png
from videokit.media.images import decode_png_array, fit_png, load_rgb
from videokit.pipeline.cache import CacheEntry, CacheStore, file_sha256
from videokit.pipeline.events import SceneProgress
from videokit.pipeline.ledger import Ledger
from videokit.pipeline.manifest import ColorRecord
from videokit.pipeline.workdir import link
from videokit.protocol import AnimateRequest
from videokit.story.plan import ScenePlan

__all__ = [
    "COLOR_STAGE",
    "UNCORRECTED",
    "AnchorStats",
    "anchor_frame",
    "chained_last_frame",
    "color_key",
    "forget_uncorrected",
    "match_scene_colors",
]

COLOR_STAGE = "color"
# Bump when the corrected pixels change (the method, its constants, the encoder settings).
METHOD = "reinhard-lab/1"
# Scene files while matching is on: the model's own clip and last frame, by store file name.
UNCORRECTED = {"clip.mp4": "clip-uncorrected.mp4", "last.png": "last-uncorrected.png"}


class AnchorStats:
    """Lab statistics per anchor picture: computed once per render, shared by its scenes."""

    def __init__(self) -> None:
        self._stats: dict[str, LabStats] = {}
        self._lock = threading.Lock()

    def get(self, anchor: bytes) -> LabStats:
        digest = hashlib.sha256(anchor).hexdigest()
        with self._lock:
            known = self._stats.get(digest)
        if known is None:  # two threads may both compute it: the same numbers either way
            known = lab_stats(_pixels(anchor))
            with self._lock:
                self._stats[digest] = known
        return known


def anchor_frame(scene: ScenePlan, request: AnimateRequest) -> bytes:
    """The picture ``scene.color`` matches the clip to: the story's reference, fitted to the
    frame as a scene starting from it would be (``reference``), or the clip's first frame
    (``previous``)."""
    assert scene.color is not None
    if scene.color.match == "previous":
        return request.image.decode()
    return fit_png(scene.color.reference.read_bytes(), scene.width, scene.height, scene.fit)


def color_key(clip_key: str, scene: ScenePlan, anchor: bytes) -> str:
    """The corrected entry's key: the model clip's key, the anchor's bytes and the settings."""
    assert scene.color is not None
    payload = {
        "method": METHOD,
        "clip": clip_key,
        "match": scene.color.match,
        "strength": scene.color.strength,
        "anchor": hashlib.sha256(anchor).hexdigest(),
        "encoder": [CLIP_CRF, CLIP_PRESET],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def chained_last_frame(
    store: CacheStore, scene: ScenePlan, request: AnimateRequest, clip: CacheEntry
) -> bytes:
    """The frame the scenes starting from ``scene`` get, given its model clip: the clip's last
    frame, corrected when ``scene.color`` is on (from the store, else computed: one frame, no
    clip). What ``plan`` forecasts the downstream cache keys with."""
    last = clip.file("last.png").read_bytes()
    if scene.color is None:
        return last
    anchor = anchor_frame(scene, request)
    entry = store.get(COLOR_STAGE, color_key(clip.key, scene, anchor))
    if entry is not None:
        return entry.file("last.png").read_bytes()
    return match_png(last, ColorTransfer(lab_stats(_pixels(anchor)), scene.color.strength))


async def forget_uncorrected(ledger: Ledger, scene_id: str, clip: CacheEntry) -> None:
    """Matching is off for the scene: its files become the model's again and the uncorrected
    links go, before its record stops saying they were corrected."""
    folder = ledger.workdir.path / "scenes" / scene_id
    await asyncio.to_thread(_relink_model_files, folder, clip)
    stage = ledger.manifest.scenes[scene_id].animate
    if stage is not None and stage.color is not None:
        stage.color = None
        ledger.save()


async def match_scene_colors(
    ledger: Ledger,
    scene: ScenePlan,
    request: AnimateRequest,
    clip: CacheEntry,
    anchors: AnchorStats,
) -> CacheEntry:
    """``clip`` (the scene's model clip) colour-matched: from the store, put back from the work
    dir, or matched now (in a thread); the scene's animate record gets its :class:`ColorRecord`.
    The manifest is only touched here, on the event loop's thread."""
    stage = ledger.manifest.scenes[scene.id].animate
    assert stage is not None
    entry, record = await asyncio.to_thread(
        _match, ledger, scene, request, clip, anchors, stage.color
    )
    stage.color = record
    ledger.save()
    return entry


def _relink_model_files(folder: Path, clip: CacheEntry) -> None:
    if any((folder / name).exists() for name in UNCORRECTED.values()):
        for name, uncorrected in UNCORRECTED.items():
            link(clip.file(name), folder / name)
            (folder / uncorrected).unlink(missing_ok=True)


def _match(
    ledger: Ledger,
    scene: ScenePlan,
    request: AnimateRequest,
    clip: CacheEntry,
    anchors: AnchorStats,
    previous: ColorRecord | None,
) -> tuple[CacheEntry, ColorRecord]:
    assert scene.color is not None
    folder = ledger.workdir.path / "scenes" / scene.id
    folder.mkdir(parents=True, exist_ok=True)
    # The model's files beside the scene's first: a lost model clip is restored from them.
    for name, uncorrected in UNCORRECTED.items():
        link(clip.file(name), folder / uncorrected)
    anchor = anchor_frame(scene, request)
    key = color_key(clip.key, scene, anchor)
    started = time.monotonic()
    entry = ledger.cache.get(COLOR_STAGE, key) or _restore(ledger, folder, clip, key, previous)
    cached = entry is not None
    if entry is None:
        ledger.emit(  # thread-safe: the render hands events to its loop
            SceneProgress(
                scene=scene.id,
                stage="animate",
                fraction=1.0,
                message="matching colours to "
                + ("the reference" if scene.color.match == "reference" else "its first frame"),
            )
        )
        entry = _correct(ledger, scene, clip, anchor, key, anchors.get(anchor))
    record = ColorRecord(
        **entry.meta["color"],
        key=key,
        cached=cached,
        seconds=None if cached else round(time.monotonic() - started, 3),
        outputs={
            "clip": ledger.workdir.relative(entry.file("clip.mp4")),
            "last_frame": ledger.workdir.relative(entry.file("last.png")),
        },
        sha256=dict(entry.meta["files"]),
    )
    return entry, record


def _restore(
    ledger: Ledger, folder: Path, clip: CacheEntry, key: str, previous: ColorRecord | None
) -> CacheEntry | None:
    """The corrected entry put back from the scene's files, if they are still its bytes."""
    if previous is None or previous.key != key:
        return None
    sources = {"clip.mp4": folder / "clip.mp4", "last.png": folder / "last.png"}
    for name, path in sources.items():
        if not path.is_file() or file_sha256(path) != previous.sha256.get(name):
            return None
    fields = {"match", "strength", "method", "anchor_sha256", "delta_e_before", "delta_e_after"}
    meta = {
        "source": clip.key,
        "frames": clip.meta.get("frames"),
        "color": previous.model_dump(include=fields),
        "restored_from": str(folder),
    }
    return ledger.cache.adopt(COLOR_STAGE, key, sources, meta)


def _correct(
    ledger: Ledger, scene: ScenePlan, clip: CacheEntry, anchor: bytes, key: str, stats: LabStats
) -> CacheEntry:
    assert scene.color is not None
    transfer = ColorTransfer(stats, scene.color.strength)
    last = clip.file("last.png").read_bytes()
    corrected = match_png(last, transfer)

    def cast(png: bytes) -> float:  # as cast_delta_e, with the anchor's statistics known
        mean = lab_stats(decode_png_array(png)).mean
        return round(float(np.linalg.norm(np.subtract(mean, stats.mean))), 3)

    record: dict[str, Any] = {
        "match": scene.color.match,
        "strength": scene.color.strength,
        "method": METHOD,
        "anchor_sha256": hashlib.sha256(anchor).hexdigest(),
        "delta_e_before": cast(last),
        "delta_e_after": cast(corrected),
    }
    with tempfile.TemporaryDirectory(prefix="videokit-color-") as tmp:
        matched = match_clip(clip.file("clip.mp4"), Path(tmp) / "clip.mp4", transfer)
        files = {"clip.mp4": matched.path.read_bytes(), "last.png": corrected}
    meta = {"source": clip.key, "frames": matched.frames, "color": record}
    return ledger.cache.put(COLOR_STAGE, key, files, meta)


def _pixels(image: bytes) -> npt.NDArray[np.uint8]:
    return np.asarray(load_rgb(image), dtype=np.uint8)
