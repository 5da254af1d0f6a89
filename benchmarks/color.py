"""Benchmark colour matching (``color: {match: ...}``) on a drifting chain; prints tables.

    .venv/bin/python benchmarks/color.py [--scenes 6] [--frames 81] [--repeat 5] [--only drift]

(a) A preview chain of 832x480 clips with a test drift per clip (red +4 %, green +1 %, blue -4 %,
    compounding as each clip starts from the last one's last frame), rendered with ``match: off``
    and ``match: reference``: each last frame's ΔE to the reference frame, CIE76 between mean Lab
    colours (the camera moves, so pixels do not line up; the cast is what compounds), and a chain
    without drift for comparison. Goal: with matching, the mean is under a third of without.
(b) The peak RSS of a child process (ffmpeg included, sampled every 20 ms) that matches 6, then 24
    distinct 81-frame 832x480 clips one after the other, as a render does. Goal: the same for both.
(c) Matching one 81-frame 832x480 clip (decode, correct, encode), best of ``--repeat``, and its
    parts: the colour maths alone (frames in memory) and decode+encode alone. Goal: under 1 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import psutil
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import videokit  # noqa: E402
from videokit.backends.preview import ColorDrift, PreviewBackend  # noqa: E402
from videokit.media.color import ColorTransfer, cast_delta_e, delta_e  # noqa: E402
from videokit.media.color_clip import (  # noqa: E402
    CLIP_CRF,
    CLIP_PRESET,
    CLIP_THREADS,
    match_clip,
)
from videokit.media.ffmpeg import RawVideoReader, RawVideoWriter  # noqa: E402
from videokit.media.images import decode_png_array  # noqa: E402
from videokit.media.probe import read_frames  # noqa: E402

__all__ = ["main"]

WIDTH, HEIGHT, FPS = 832, 480, 16
CLIP_FRAMES = 81
REFERENCE = REPO / "examples" / "assets" / "reference.png"
DRIFT = ColorDrift(gain=(1.04, 1.01, 0.96))
SAMPLE_S = 0.02
MiB = 1 << 20
CLIP_VERSION = "v1"

Frame = npt.NDArray[np.uint8]


# --------------------------------------------------------------------------- (a) drift


def render_chain(root: Path, scenes: int, frames: int, *, match: str, drift: bool) -> Path:
    """Render the chain into ``root`` with its own empty result store; return the work dir."""
    root.mkdir(parents=True)
    story = root / "chain.yaml"
    lines = [
        f"  - {{id: s{i}, motion: the camera slowly pushes in on shot {i}}}" for i in range(scenes)
    ]
    story.write_text(
        f"reference: {REFERENCE}\n"
        f"defaults: {{width: {WIDTH}, height: {HEIGHT}, fps: {FPS}, frames: {frames}, "
        f"color: {{match: {match}}}}}\n"
        "scenes:\n" + "\n".join(lines) + "\n"
    )
    os.environ["VIDEOKIT_CACHE_DIR"] = str(root / "cache")  # nothing cached: every clip made
    out = root / "out"
    backend = PreviewBackend(drift=DRIFT if drift else None)
    videokit.Pipeline(story, out=out, backend=backend).run()
    return out


def last_frame(out: Path, scene: str) -> Frame:
    return decode_png_array((out / "scenes" / scene / "last.png").read_bytes())


def drift_table(scenes: int, frames: int) -> bool:
    reference = np.asarray(Image.open(REFERENCE).convert("RGB"), dtype=np.uint8)
    ids = [f"s{i}" for i in range(scenes)]
    with tempfile.TemporaryDirectory(prefix="videokit-bench-color-") as tmp:
        runs: dict[str, Path] = {}
        for name, match, drift in (
            ("clean", "off", False),
            ("off", "off", True),
            ("reference", "reference", True),
        ):
            print(f"(a) rendering {scenes} scenes, match: {match}, drift: {drift} ...", flush=True)
            started = time.perf_counter()
            runs[name] = render_chain(Path(tmp) / name, scenes, frames, match=match, drift=drift)
            print(f"    {time.perf_counter() - started:.1f} s", flush=True)
        rows: list[tuple[str, ...]] = []
        clean_cast, off_cast, on_cast = [], [], []
        pixel_off: list[float] = []
        pixel_on: list[float] = []
        for scene in ids:
            clean = last_frame(runs["clean"], scene)
            pixel_off.append(delta_e(last_frame(runs["off"], scene), clean))
            pixel_on.append(delta_e(last_frame(runs["reference"], scene), clean))
            clean_cast.append(cast_delta_e(clean, reference))
            off_cast.append(cast_delta_e(last_frame(runs["off"], scene), reference))
            on_cast.append(cast_delta_e(last_frame(runs["reference"], scene), reference))
            rows.append(
                (scene, f"{clean_cast[-1]:.2f}", f"{off_cast[-1]:.2f}", f"{on_cast[-1]:.2f}",
                 f"{on_cast[-1] / off_cast[-1]:.3f}")
            )  # fmt: skip
    mean_off, mean_on = float(np.mean(off_cast)), float(np.mean(on_cast))
    ratio = mean_on / mean_off
    rows.append(
        ("mean", f"{np.mean(clean_cast):.2f}", f"{mean_off:.2f}", f"{mean_on:.2f}", f"{ratio:.3f}")
    )  # fmt: skip
    print()
    print(
        f"(a) {scenes}-scene chain, {WIDTH}x{HEIGHT}, {frames} frames per clip, test drift "
        f"{DRIFT.label} per clip; ΔE (CIE76, of the mean Lab colours) of each clip's last frame "
        "to the reference frame"
    )
    print_table(
        ("clip", "no drift, off", "drift, match: off", "drift, match: reference", "ratio"),
        rows,
    )
    met = ratio < 1 / 3
    print(f"goal: mean ΔE with matching < 1/3 of without: {ratio:.3f} -> {yes(met)}")
    print("('no drift, off': what the camera moves alone change; matching holds that too)")
    print()
    print(
        "(a') the same last frames pixel by pixel (mean CIE76 ΔE per pixel) against the same "
        "scene's last frame rendered without drift: the drift alone, content and camera aligned"
    )
    pixel_rows = [
        (scene, f"{off:.2f}", f"{on:.2f}", f"{on / off:.3f}")
        for scene, off, on in zip(ids, pixel_off, pixel_on, strict=True)
    ]
    pixel_ratio = float(np.mean(pixel_on)) / float(np.mean(pixel_off))
    pixel_rows.append(
        ("mean", f"{np.mean(pixel_off):.2f}", f"{np.mean(pixel_on):.2f}", f"{pixel_ratio:.3f}")
    )
    print_table(("clip", "drift, match: off", "drift, match: reference", "ratio"), pixel_rows)
    print(
        "(matching holds each clip's colour statistics to the reference's, not to the undrifted "
        "render's, whose own mean moves with the camera: 'no drift, off' in (a))"
    )
    return met


# --------------------------------------------------------------------------- clips for (b), (c)


def clip_dir() -> Path:
    return REPO / "out" / "bench-color-clips" / f"{WIDTH}x{HEIGHT}-{CLIP_FRAMES}f-{CLIP_VERSION}"


def ensure_clips(count: int) -> list[Path]:
    """Distinct drifting clips: the reference panned by a clip-dependent offset, its colour
    ramping to the test drift by the last frame (as a preview clip with the drift does)."""
    folder = clip_dir()
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"clip_{k:03d}.mp4" for k in range(count)]
    missing = [k for k, p in enumerate(paths) if not p.exists()]
    if missing:
        print(f"synthesising {len(missing)} clips in {folder} ...", flush=True)
        picture = Image.open(REFERENCE).convert("RGB").resize((WIDTH, HEIGHT))
    for k in missing:
        partial = paths[k].with_suffix(".partial.mp4")
        with RawVideoWriter(
            partial, width=WIDTH, height=HEIGHT, fps=FPS, crf=18, preset="veryfast"
        ) as writer:
            for j in range(CLIP_FRAMES):
                t = j / (CLIP_FRAMES - 1)
                frame = np.roll(np.asarray(DRIFT.apply(picture, t)), k * 37 + j * 2, axis=1)
                writer.write(np.ascontiguousarray(frame))
        partial.replace(paths[k])
    return paths


def child_match(count: int) -> None:
    """In the child: match ``count`` clips one after the other, as a render's scenes are."""
    paths = ensure_clips(count)
    anchor = np.asarray(Image.open(REFERENCE).convert("RGB"), dtype=np.uint8)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="videokit-bench-color-") as tmp:
        for k, path in enumerate(paths):
            match_clip(path, Path(tmp) / f"matched_{k}.mp4", ColorTransfer(anchor))
    print(json.dumps({"seconds": time.perf_counter() - started, "clips": count}))


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        members = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for member in members:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += member.memory_info().rss
    return total


def measure_child(count: int) -> tuple[float, float]:
    """(seconds matching, peak tree MiB) of a child process matching ``count`` clips."""
    ensure_clips(count)  # made here, outside the measurement
    cmd = [sys.executable, __file__, "--child", str(count)]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(child.pid)
    peak = 0
    while child.poll() is None:
        peak = max(peak, tree_rss(watched))
        time.sleep(SAMPLE_S)
    out, err = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"the child failed ({child.returncode}):\n{err[-3000:]}")
    return float(json.loads(out.strip().splitlines()[-1])["seconds"]), peak / MiB


def memory_table() -> bool:
    rows = []
    peaks = []
    for count in (6, 24):
        print(f"(b) matching {count} clips in a child process ...", flush=True)
        seconds, peak = measure_child(count)
        peaks.append(peak)
        rows.append((str(count), f"{seconds:.1f}", f"{seconds / count:.2f}", f"{peak:.0f}"))
    print()
    print(f"(b) peak RSS of the matching step ({WIDTH}x{HEIGHT}, {CLIP_FRAMES} frames per clip)")
    print_table(("clips", "total s", "s per clip", "peak tree MiB"), rows)
    met = peaks[1] <= peaks[0] * 1.1 + 5
    print(f"goal: peak independent of the clip count: {peaks[0]:.0f} vs {peaks[1]:.0f} MiB "
          f"-> {yes(met)}")  # fmt: skip
    return met


# --------------------------------------------------------------------------- (c) time


def time_table(repeat: int) -> bool:
    (path,) = ensure_clips(1)
    anchor = np.asarray(Image.open(REFERENCE).convert("RGB"), dtype=np.uint8)
    transfer = ColorTransfer(anchor)
    frames = list(read_frames(path))
    whole, maths, plumbing = [], [], []
    with tempfile.TemporaryDirectory(prefix="videokit-bench-color-") as tmp:
        target = Path(tmp) / "matched.mp4"
        for _ in range(repeat):
            started = time.perf_counter()
            match_clip(path, target, transfer)
            whole.append(time.perf_counter() - started)
            started = time.perf_counter()
            for frame in frames:
                transfer.apply(frame, out=frame.copy())
            maths.append(time.perf_counter() - started)
            started = time.perf_counter()
            copy_clip(path, target)
            plumbing.append(time.perf_counter() - started)
    rows = [
        (step, f"{min(times):.3f}", f"{np.median(times):.3f}")
        for step, times in (
            ("match_clip: decode + correct + encode", whole),
            ("  the colour maths alone (in memory)", maths),
            ("  decode + encode alone (no maths)", plumbing),
        )
    ]
    print()
    print(
        f"(c) one {CLIP_FRAMES}-frame {WIDTH}x{HEIGHT} clip, best and median of {repeat}; "
        f"{1000 * min(maths) / CLIP_FRAMES:.1f} ms of maths per frame"
    )
    print_table(("step", "best s", "median s"), rows)
    met = min(whole) < 1.0
    print(f"goal: matching one clip under 1 s: {min(whole):.3f} s -> {yes(met)}")
    return met


def copy_clip(source: Path, target: Path) -> None:
    """What match_clip does around the maths: the same decoder and encoder, frames untouched."""
    with (
        RawVideoReader(["-i", str(source)], width=WIDTH, height=HEIGHT) as reader,
        RawVideoWriter(
            target, width=WIDTH, height=HEIGHT, fps=FPS, crf=CLIP_CRF, preset=CLIP_PRESET,
            threads=CLIP_THREADS,
        ) as writer,
    ):  # fmt: skip
        for frame in reader.frames():
            writer.write(frame)


# --------------------------------------------------------------------------- main


def yes(ok: bool) -> str:
    return "yes" if ok else "NO"


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--scenes", type=int, default=6, help="scenes in the chain of (a)")
    parser.add_argument("--frames", type=int, default=CLIP_FRAMES, help="frames per clip in (a)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of (c); the best counts")
    parser.add_argument("--only", choices=("drift", "memory", "time"), help="one part only")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child_match(args.child)
        return 0
    load_before = os.getloadavg()[0]
    results = []
    if args.only in (None, "drift"):
        results.append(drift_table(args.scenes, args.frames))
    if args.only in (None, "memory"):
        results.append(memory_table())
    if args.only in (None, "time"):
        results.append(time_table(args.repeat))
    print()
    print(
        f"load average before/after: {load_before:.2f} / {os.getloadavg()[0]:.2f} "
        f"on {os.cpu_count()} CPUs"
    )
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
