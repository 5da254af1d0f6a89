"""Benchmark the stitcher against plain ffmpeg (and, optionally, naive moviepy).

Run by hand::

    .venv/bin/python benchmarks/stitch.py [--clips 12 48] [--preset medium] [--moviepy]

It synthesises N clips of 81 frames at 832x480, 16 fps (moving gradients, a scrolling texture
and grain: content x264 has to work on; deterministic, cached under ``out/bench-clips/``) and a
sine + pink-noise soundtrack, then measures for each clip count:

(a) plain concatenation through ``stitch()`` (the stream-copy path); goal <= 1 s;
(b) seam drops (every other clip continues the previous one: ``drop_head=1``), 0.5 s
    cross-fades at every fourth boundary and the soundtrack, through ``stitch()`` and through
    ONE equivalent ffmpeg filter graph (trim/xfade/concat + the same audio filters, same preset
    and crf), side by side; goal: ours <= 1.2x ffmpeg's wall time, same frame count;
(c) the peak RSS of each job's whole process tree (children included), sampled every 20 ms;
    goal <= 400 MiB for ``stitch()`` and not growing with the clip count.

Every job runs in a child process; ``wall s`` for ``stitch()`` is measured inside the child
around the call (the interpreter start and imports, ~0.3 s, are not the stitcher's cost), for
ffmpeg and moviepy it is the child's lifetime. The (b) jobs run ``--repeat`` times each,
alternating, and the fastest run counts (on a shared 2-core machine, single runs vary by 20 %);
the copy job, which takes well under a second, runs at least 3 times.
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from videokit.media.ffmpeg import RawVideoWriter, ffmpeg_exe, run_ffmpeg  # noqa: E402
from videokit.media.probe import probe_video  # noqa: E402
from videokit.media.stitch import (  # noqa: E402
    AudioTrack,
    Segment,
    planned_frame_count,
    stitch,
)

__all__ = ["main"]

WIDTH, HEIGHT, FPS, FRAMES = 832, 480, 16, 81
CROSSFADE = 8  # 0.5 s at 16 fps
AUDIO_S = 200.0  # longer than 12 clips (trimmed + faded), shorter than 48 (padded)
SAMPLE_S = 0.02
MiB = 1 << 20
CLIP_VERSION = "v1"


# --------------------------------------------------------------------------- synthetic input


class _Synth:
    """Deterministic yuv420p frames: a scene = texture + gradient palette; time = camera pan."""

    def __init__(self) -> None:
        rng = np.random.default_rng(1234)
        # A smooth-ish texture twice the frame size, panned across (x264 can motion-search it).
        noise = rng.integers(0, 256, (HEIGHT * 2 // 8, WIDTH * 2 // 8), dtype=np.uint8)
        big = np.kron(noise, np.ones((8, 8), dtype=np.uint8)).astype(np.float32)
        for axis in (0, 1):  # cheap blur: average with shifted copies
            big = ((big + np.roll(big, 3, axis) + np.roll(big, -3, axis)) / 3).astype(np.float32)
        self.texture = (big - 128) * 0.35
        self.grain = rng.normal(0, 3, (8, HEIGHT, WIDTH)).astype(np.float32)
        self.yy, self.xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
        self.cy, self.cx = np.mgrid[0 : HEIGHT // 2, 0 : WIDTH // 2].astype(np.float32)

    def frame(self, scene: int, t: int) -> bytes:
        phase = t / 40.0 + scene * 1.7
        dx, dy = (t * 3 + scene * 97) % WIDTH, (t + scene * 53) % HEIGHT
        tex = self.texture[dy : dy + HEIGHT, dx : dx + WIDTH]
        y = (
            110
            + 60 * np.sin(self.xx / 180.0 + phase)
            + 30 * np.cos(self.yy / 90.0 - phase * 0.7)
            + tex
            + self.grain[t % 8]
        )
        u = 128 + 40 * np.sin(self.cx / 150.0 + phase * 0.5 + scene)
        v = 128 + 40 * np.cos(self.cy / 70.0 - phase * 0.3 + scene * 2)
        planes = [np.clip(p, 16, 235).astype(np.uint8) for p in (y, u, v)]
        return b"".join(p.tobytes() for p in planes)


def clip_dir() -> Path:
    return REPO / "out" / "bench-clips" / f"{WIDTH}x{HEIGHT}-{FPS}fps-{FRAMES}f-{CLIP_VERSION}"


def ensure_clips(count: int) -> list[Path]:
    """Clip k continues clip k-1 (same scene, time runs on) when k is odd: its frame 0 repeats
    the previous clip's last frame, like a chained image-to-video generation."""
    folder = clip_dir()
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"clip_{k:03d}.mp4" for k in range(count)]
    missing = [k for k, p in enumerate(paths) if not p.exists()]
    if missing:
        print(f"synthesising {len(missing)} clips in {folder} ...", flush=True)
        synth = _Synth()
    for k in missing:
        scene = k // 2
        start = 0 if k % 2 == 0 else FRAMES - 1
        partial = paths[k].with_suffix(".partial.mp4")
        with RawVideoWriter(
            partial,
            width=WIDTH,
            height=HEIGHT,
            fps=FPS,
            pixel_format="yuv420p",
            crf=18,
            preset="veryfast",
        ) as writer:
            for j in range(FRAMES):
                writer.write(synth.frame(scene, start + j))
        partial.replace(paths[k])
    return paths


def ensure_audio() -> Path:
    path = clip_dir().parent / f"soundtrack-{AUDIO_S:g}s.mp3"
    if not path.exists():
        run_ffmpeg(
            [
                "-f", "lavfi", "-i", f"sine=frequency=220:sample_rate=48000:duration={AUDIO_S}",
                "-f", "lavfi", "-i", f"anoisesrc=color=pink:sample_rate=48000:amplitude=0.2:"
                f"duration={AUDIO_S}:seed=7",
                "-filter_complex", "[0][1]amix=inputs=2,pan=stereo|c0=c0|c1=c0",
                "-c:a", "libmp3lame", "-b:a", "192k", str(path),
            ],
            what="making the benchmark soundtrack",
        )  # fmt: skip
    return path


# --------------------------------------------------------------------------- jobs


def seam_segments(paths: Sequence[Path]) -> list[Segment]:
    """Odd clips continue the previous one (seam drop); every 4th boundary cross-fades."""
    segments = []
    for k, path in enumerate(paths):
        drop = 1 if k % 2 == 1 else 0
        fade = CROSSFADE if k % 4 == 2 else 0
        segments.append(Segment(path, FRAMES, drop_head=drop, crossfade=fade))
    return segments


def _audio_chain(duration: float, audio_s: float, fade_s: float) -> str:
    # The same chain stitch() builds (see videokit.media.stitch._audio_args).
    d = f"{duration:.6f}"
    chain = ["asetpts=N/SR/TB", f"atrim=end={d}"]
    if audio_s > duration + 1e-3:
        fade = min(fade_s, duration)
        chain.append(f"afade=t=out:st={duration - fade:.6f}:d={fade:.6f}")
    chain.append(f"apad=whole_dur={d}")
    return ",".join(chain)


def ffmpeg_reference_cmd(
    segments: Sequence[Segment], audio: Path, output: Path, *, preset: str, crf: int
) -> list[str]:
    """ONE ffmpeg run doing the same job with a filter graph (N decoders, trim/xfade/concat)."""
    args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error"]
    for seg in segments:
        args += ["-i", str(seg.path)]
    args += ["-i", str(audio)]
    graph: list[str] = []
    for k, seg in enumerate(segments):
        # settb: concat's output time base is 1/1000000 and xfade wants equal time bases.
        graph.append(
            f"[{k}:v]trim=start_frame={seg.drop_head},setpts=PTS-STARTPTS,settb=AVTB[v{k}]"
        )
    acc, acc_frames = "v0", segments[0].frames - segments[0].drop_head
    for k, seg in enumerate(segments[1:], start=1):
        out = f"x{k}"
        length = seg.frames - seg.drop_head
        if seg.crossfade:
            offset = (acc_frames - seg.crossfade) / FPS
            graph.append(
                f"[{acc}][v{k}]xfade=transition=fade:duration={seg.crossfade / FPS:.6f}"
                f":offset={offset:.6f}[{out}]"
            )
            acc_frames += length - seg.crossfade
        else:
            graph.append(f"[{acc}][v{k}]concat=n=2:v=1:a=0[{out}]")
            acc_frames += length
        acc = out
    duration = planned_frame_count(segments) / FPS
    graph.append(f"[{len(segments)}:a]{_audio_chain(duration, AUDIO_S, 1.0)}[aout]")
    args += [
        "-filter_complex", ";".join(graph),
        "-map", f"[{acc}]", "-map", "[aout]",
        "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "192k", "-fps_mode", "passthrough",
        "-movflags", "+faststart", str(output),
    ]  # fmt: skip
    return args


@dataclass
class Result:
    wall_s: float
    peak_mib: float
    frames: int


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        members = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for member in members:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += member.memory_info().rss
    return total


def measure(cmd: Sequence[str]) -> tuple[float, float, str]:
    """Run ``cmd``, sampling its process tree; return (wall s, peak MiB, stdout)."""
    started = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(child.pid)
    peak = 0
    while child.poll() is None:
        peak = max(peak, _tree_rss(watched))
        time.sleep(SAMPLE_S)
    out, err = child.communicate()
    wall = time.perf_counter() - started
    if child.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({child.returncode}):\n{err[-3000:]}")
    return wall, peak / MiB, out


def run_ours(spec: dict[str, object]) -> Result:
    _, peak, out = measure([sys.executable, __file__, "--job", json.dumps(spec)])
    inner = json.loads(out.strip().splitlines()[-1])
    return Result(float(inner["seconds"]), peak, int(inner["frames"]))


def best(results: Sequence[Result]) -> Result:
    """Fastest wall time, highest peak memory; every run must give the same frame count."""
    frames = {r.frames for r in results}
    if len(frames) != 1:
        raise RuntimeError(f"runs disagree on the frame count: {sorted(frames)}")
    return Result(min(r.wall_s for r in results), max(r.peak_mib for r in results), frames.pop())


def run_ffmpeg_reference(cmd: Sequence[str], output: Path) -> Result:
    wall, peak, _ = measure(cmd)
    return Result(wall, peak, probe_video(output).frames)


def run_moviepy(paths: Sequence[Path], output: Path, preset: str, crf: int) -> Result:
    spec: dict[str, object] = {"kind": "moviepy", "paths": [str(p) for p in paths]}
    spec |= {"output": str(output), "preset": preset, "crf": crf}
    wall, peak, _ = measure([sys.executable, __file__, "--job", json.dumps(spec)])
    return Result(wall, peak, probe_video(output).frames)


def child_job(spec: dict[str, object]) -> None:
    """Inside the measured child process."""
    output = Path(str(spec["output"]))
    paths = [Path(p) for p in spec["paths"]]  # type: ignore[attr-defined]
    if spec["kind"] == "moviepy":
        from moviepy import VideoFileClip, concatenate_videoclips

        clips = [VideoFileClip(str(p)) for p in paths]
        joined = concatenate_videoclips(clips)
        joined.write_videofile(
            str(output),
            fps=FPS,
            codec="libx264",
            preset=str(spec["preset"]),
            ffmpeg_params=["-crf", str(spec["crf"])],
            audio=False,
            logger=None,
        )
        for clip in clips:
            clip.close()
        return
    if spec["kind"] == "copy":
        segments = [Segment(p, FRAMES) for p in paths]
        audio = None
    else:
        segments = seam_segments(paths)
        audio = AudioTrack(Path(str(spec["audio"])))
    report = stitch(
        segments,
        output,
        fps=FPS,
        width=WIDTH,
        height=HEIGHT,
        audio=audio,
        crf=int(str(spec["crf"])),
        preset=str(spec["preset"]),
    )
    print(json.dumps({"seconds": report.seconds, "frames": report.frames, "method": report.method}))


# --------------------------------------------------------------------------- table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, nargs="+", default=[12, 48])
    parser.add_argument("--preset", default="medium")
    parser.add_argument("--crf", type=int, default=18)
    parser.add_argument(
        "--repeat", type=int, default=2, help="runs of each (b) job; the fastest counts"
    )
    parser.add_argument("--moviepy", action="store_true", help="add naive moviepy (12 clips)")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.job:
        child_job(json.loads(args.job))
        return 0

    paths_all = ensure_clips(max(args.clips))
    audio = ensure_audio()
    # The machine may be shared: the load average tells a reader how noisy the timings are.
    load_before = os.getloadavg()[0]
    rows: list[tuple[str, ...]] = []
    peaks: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="videokit-bench-") as tmp:
        out = Path(tmp)
        for count in args.clips:
            paths = paths_all[:count]
            base = {"paths": [str(p) for p in paths], "preset": args.preset, "crf": args.crf}
            planned_copy = count * FRAMES
            print(f"[{count} clips] copy ...", flush=True)
            copy_spec = base | {"kind": "copy", "output": str(out / f"copy{count}.mp4")}
            copy = best([run_ours(copy_spec) for _ in range(max(3, args.repeat))])
            ok = copy.wall_s <= 1.0 and copy.frames == planned_copy
            rows.append(
                (str(count), "(a) concat, stitch() copy", f"{copy.wall_s:.2f}",
                 f"{copy.peak_mib:.0f}", str(copy.frames), "<= 1 s, exact frames", _yes(ok))
            )  # fmt: skip

            segments = seam_segments(paths)
            planned = planned_frame_count(segments)
            ref_out = out / f"ref{count}.mp4"
            ref_cmd = ffmpeg_reference_cmd(
                segments, audio, ref_out, preset=args.preset, crf=args.crf
            )
            ours_spec = base | {"kind": "seams", "audio": str(audio)}
            ours_spec |= {"output": str(out / f"s{count}.mp4")}
            refs: list[Result] = []
            runs: list[Result] = []
            for rep in range(args.repeat):
                # Alternate who goes first, so a slow spell on the machine hits both sides.
                for who in ("ffmpeg", "ours") if rep % 2 == 0 else ("ours", "ffmpeg"):
                    print(f"[{count} clips] seams+fades+audio: {who} #{rep + 1} ...", flush=True)
                    if who == "ffmpeg":
                        refs.append(run_ffmpeg_reference(ref_cmd, ref_out))
                    else:
                        runs.append(run_ours(ours_spec))
            ref, ours = best(refs), best(runs)
            peaks[count] = ours.peak_mib
            ratio = ours.wall_s / ref.wall_s
            flat = all(p <= min(peaks.values()) * 1.15 + 20 for p in peaks.values())
            ok = ratio <= 1.2 and ours.frames == ref.frames == planned
            ok_mem = ours.peak_mib <= 400 and flat
            rows.append(
                (str(count), "(b) seams+fades+audio, stitch()", f"{ours.wall_s:.2f}",
                 f"{ours.peak_mib:.0f}", str(ours.frames),
                 f"<= 1.2x ffmpeg (is {ratio:.2f}x), frames = {planned}", _yes(ok))
            )  # fmt: skip
            rows.append(
                (str(count), "(c) same, stitch() memory", "", f"{ours.peak_mib:.0f}", "",
                 "<= 400 MiB, flat in clip count", _yes(ok_mem))
            )  # fmt: skip
            rows.append(
                (str(count), "(b) same, one ffmpeg filter graph", f"{ref.wall_s:.2f}",
                 f"{ref.peak_mib:.0f}", str(ref.frames), "reference", "-")
            )  # fmt: skip
            if args.moviepy and count == 12:
                print(f"[{count} clips] moviepy concatenate ...", flush=True)
                mp = run_moviepy(paths, out / "moviepy.mp4", args.preset, args.crf)
                rows.append(
                    (str(count), "(a) concat, naive moviepy", f"{mp.wall_s:.2f}",
                     f"{mp.peak_mib:.0f}", str(mp.frames), "comparison", "-")
                )  # fmt: skip
    print()
    print(
        f"preset={args.preset} crf={args.crf} {WIDTH}x{HEIGHT} {FPS} fps, {FRAMES}-frame clips; "
        f"(b) best of {args.repeat}; load average before/after: "
        f"{load_before:.2f} / {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    _print_table(
        ("clips", "job", "wall s", "peak tree MiB", "frames", "goal", "met?"),
        rows,
    )
    return 0


def _yes(ok: bool) -> str:
    return "yes" if ok else "NO"


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    print(line)
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    raise SystemExit(main())
