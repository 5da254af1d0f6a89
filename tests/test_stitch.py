"""The stitcher and the probes, against the real bundled ffmpeg, on tiny clips.

Every clip frame is one flat grey level (U = V = 128) and the clips are encoded losslessly
(crf 0), so a decoded frame's luma tells exactly which source frame it is, and stitches done
with ``crf=0`` can be compared level by level with a plain-Python model of the plan.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from videokit.errors import FFmpegError
from videokit.media import stitch as stitch_module
from videokit.media.ffmpeg import RawVideoReader, RawVideoWriter, ffmpeg_exe, run_ffmpeg
from videokit.media.probe import (
    MediaError,
    extract_frame,
    probe_audio,
    probe_video,
    read_frames,
    read_mp4_video_track,
)
from videokit.media.stitch import (
    AudioTrack,
    Segment,
    planned_frame_count,
    stitch,
    validate_segments,
)

W, H, FPS, N = 64, 48, 16, 9
TONE_RMS = 0.125 / np.sqrt(2)  # lavfi's sine has amplitude 1/8


def level(clip: int, frame: int) -> int:
    """The grey level of ``frame`` in clip ``clip``: distinct across all test clips."""
    return 20 + 55 * clip + 6 * frame


def make_clip(
    path: Path,
    clip: int,
    *,
    frames: int = N,
    size: tuple[int, int] = (W, H),
    preset: str = "ultrafast",
) -> Path:
    w, h = size
    with RawVideoWriter(
        path, width=w, height=h, fps=FPS, pixel_format="yuv420p", crf=0, preset=preset
    ) as writer:
        for i in range(frames):
            y = np.full(w * h, level(clip, i), dtype=np.uint8)
            uv = np.full(w * h // 2, 128, dtype=np.uint8)
            writer.write(np.concatenate([y, uv]))
    return path


def luma_levels(video: Path) -> list[int]:
    """Mean luma of every decoded frame, rounded (frames are flat, so this is *the* level)."""
    info = probe_video(video)
    with RawVideoReader(
        ["-i", str(video)], width=info.width, height=info.height, pixel_format="yuv420p"
    ) as reader:
        return [round(float(f[: info.width * info.height].mean())) for f in reader.frames()]


def model(segments: Sequence[Segment], clips: dict[Path, int]) -> list[int]:
    """What the stitch must produce, computed the slow obvious way."""
    out: list[int] = []
    for seg in segments:
        frames = [level(clips[seg.path], i) for i in range(seg.frames)][seg.drop_head :]
        n = seg.crossfade
        if n:
            prev, out = out[-n:], out[:-n]
            for i in range(n):
                w = i + 1
                out.append((prev[i] * (n + 1 - w) + frames[i] * w + (n + 1) // 2) // (n + 1))
        out.extend(frames[n:])
    return out


def pcm(video: Path, rate: int = 16000) -> np.ndarray:
    """The video's audio as mono float samples in [-1, 1]."""
    cmd = [ffmpeg_exe(), "-v", "error", "-i", str(video), "-map", "0:a:0"]
    cmd += ["-ac", "1", "-ar", str(rate), "-f", "s16le", "-"]
    data = subprocess.run(cmd, capture_output=True, check=True).stdout
    return np.frombuffer(data, dtype=np.int16).astype(np.float64) / 32768


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "partial" in p.name)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    made = {name: make_clip(d / f"{name}.mp4", k) for k, name in enumerate("abc")}
    made["small"] = make_clip(d / "small.mp4", 3, size=(32, 24))
    made["other_settings"] = make_clip(d / "other.mp4", 3, preset="medium")
    return made


@pytest.fixture(scope="module")
def index(clips: dict[str, Path]) -> dict[Path, int]:
    return {clips["a"]: 0, clips["b"]: 1, clips["c"]: 2, clips["other_settings"]: 3}


@pytest.fixture(scope="module")
def sounds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("audio")
    made = {}
    for name, seconds in (("long", 3.0), ("short", 0.4)):
        path = d / f"{name}.wav"
        run_ffmpeg(
            ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}",
             "-c:a", "pcm_s16le", str(path)]
        )  # fmt: skip
        made[name] = path
    return made


# --------------------------------------------------------------------------- probes


def test_probe_video_reports_exact_stream_facts(clips: dict[str, Path]) -> None:
    info = probe_video(clips["a"])
    assert (info.width, info.height, info.fps, info.frames) == (W, H, 16.0, N)
    assert info.duration_s == pytest.approx(N / FPS)
    assert (info.codec, info.pix_fmt, info.has_audio, info.audio_codec) == (
        "h264",
        "yuv420p",
        False,
        None,
    )
    assert info.color.space == "bt709"


def test_mp4_sample_tables_agree_with_ffmpeg(clips: dict[str, Path]) -> None:
    for name in ("a", "small", "other_settings"):
        track, info = read_mp4_video_track(clips[name]), probe_video(clips[name])
        assert track is not None
        assert (track.width, track.height, track.fps, track.frames) == (
            info.width,
            info.height,
            info.fps,
            info.frames,
        )
        assert track.duration_s == pytest.approx(info.duration_s)
        assert track.codec == "avc1" and track.yuv420p_8bit and track.avc_config
    assert read_mp4_video_track(clips["a"]) != read_mp4_video_track(clips["other_settings"])


def test_probe_audio_counts_samples(sounds: dict[str, Path]) -> None:
    info = probe_audio(sounds["short"])
    assert (info.codec, info.sample_rate, info.channels) == ("pcm_s16le", 44100, 1)
    assert info.duration_s == pytest.approx(0.4, abs=1e-4)


def test_probe_audio_rejects_files_that_are_not_audio(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    text = tmp_path / "story.json"
    text.write_text('{"scenes": []}\n')
    with pytest.raises(MediaError, match="not a media file"):
        probe_audio(text)
    # ffmpeg reads any *.bin as "binary text art": media, but still not audio
    art = tmp_path / "notes.bin"
    art.write_bytes(b"this is not a media file at all\n" * 20)
    with pytest.raises(MediaError, match="this file is not audio"):
        probe_audio(art)
    with pytest.raises(FFmpegError, match="not audio"):  # MediaError is also an FFmpegError
        probe_audio(clips["a"])
    with pytest.raises(ValueError, match="not audio"):  # ... and a ValueError
        probe_audio(clips["a"])
    with pytest.raises(FileNotFoundError):
        probe_audio(tmp_path / "missing.wav")


def test_extract_frame_is_exact_including_the_last(tmp_path: Path, clips: dict[str, Path]) -> None:
    frames = list(read_frames(clips["b"]))
    assert len(frames) == N and frames[0].shape == (H, W, 3) and frames[0].dtype == np.uint8
    last = np.asarray(Image.open(extract_frame(clips["b"], -1, tmp_path / "last.png")))
    third = np.asarray(Image.open(extract_frame(clips["b"], 3, tmp_path / "third.png")))
    assert np.array_equal(last, frames[-1])
    assert not np.array_equal(last, frames[-2])
    assert np.array_equal(third, frames[3])
    with pytest.raises(ValueError, match="out of range"):
        extract_frame(clips["b"], N, tmp_path / "nope.png")


def test_yuv_frames_pass_through_the_writer_unconverted(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(16, 236, W * H * 3 // 2, dtype=np.uint8)
    path = tmp_path / "lossless.mp4"
    with RawVideoWriter(
        path, width=W, height=H, fps=FPS, pixel_format="yuv420p", crf=0, preset="ultrafast"
    ) as writer:
        writer.write(frame)
        writer.write_frames(np.stack([frame, frame]))
    with RawVideoReader(["-i", str(path)], width=W, height=H, pixel_format="yuv420p") as reader:
        decoded = list(reader.frames())
    assert len(decoded) == 3
    assert all(np.array_equal(d, frame) for d in decoded)


# --------------------------------------------------------------------------- stitch


def test_all_cuts_stream_copy_bit_exactly(tmp_path: Path, clips: dict[str, Path]) -> None:
    segments = [Segment(clips[n], N) for n in "abc"]
    report = stitch(segments, tmp_path / "out.mp4", fps=FPS, width=W, height=H)
    assert report.method == "copy"
    assert report.frames == planned_frame_count(segments) == 3 * N
    assert luma_levels(report.output) == [level(c, i) for c in range(3) for i in range(N)]
    assert leftovers(tmp_path) == []


def test_copy_keeps_the_timeline_when_a_clip_has_longer_audio(
    tmp_path: Path, clips: dict[str, Path], sounds: dict[str, Path]
) -> None:
    # The container of this clip lasts 3 s (its audio) but its video 9/16 s: the concat
    # demuxer must not start the next clip after the audio.
    noisy = tmp_path / "with_audio.mp4"
    run_ffmpeg(
        ["-i", str(clips["a"]), "-i", str(sounds["long"]), "-map", "0:v", "-map", "1:a",
         "-c:v", "copy", "-c:a", "aac", str(noisy)]
    )  # fmt: skip
    segments = [Segment(noisy, N), Segment(clips["b"], N)]
    report = stitch(segments, tmp_path / "out.mp4", fps=FPS, width=W, height=H)
    assert report.method == "copy"
    track = read_mp4_video_track(report.output)
    assert track is not None and track.frames == 2 * N
    assert track.duration_s == pytest.approx(2 * N / FPS)
    assert not probe_video(report.output).has_audio  # clip audio is not carried over


def test_clips_with_different_encoder_settings_are_reencoded(
    tmp_path: Path, clips: dict[str, Path], index: dict[Path, int]
) -> None:
    # One MP4 track holds one H.264 configuration: copying would mis-decode the later clip.
    segments = [Segment(clips["a"], N), Segment(clips["other_settings"], N)]
    report = stitch(segments, tmp_path / "out.mp4", fps=FPS, width=W, height=H, crf=0)
    assert report.method == "reencode"
    assert luma_levels(report.output) == model(segments, index)


@pytest.mark.parametrize("chunk_frames", [1, 4, None])
def test_seam_drop_removes_exactly_the_head_frames(
    tmp_path: Path,
    clips: dict[str, Path],
    index: dict[Path, int],
    monkeypatch: pytest.MonkeyPatch,
    chunk_frames: int | None,
) -> None:
    if chunk_frames:  # read boundaries inside segments exercise the routing arithmetic
        monkeypatch.setattr(stitch_module, "_CHUNK_BYTES", chunk_frames * W * H * 3 // 2)
    segments = [
        Segment(clips["a"], N),
        Segment(clips["b"], N, drop_head=1),
        Segment(clips["c"], N, drop_head=2),
    ]
    report = stitch(segments, tmp_path / "out.mp4", fps=FPS, width=W, height=H, crf=0)
    got = luma_levels(report.output)
    assert report.method == "reencode"
    assert report.frames == len(got) == 3 * N - 3
    assert got[N] == level(1, 1)  # b's frame 0 is gone, its frame 1 follows a's last frame
    assert got[N - 1] == level(0, N - 1)
    assert level(1, 0) not in got and level(2, 0) not in got and level(2, 1) not in got
    assert got == model(segments, index)


@pytest.mark.parametrize("chunk_frames", [1, 5, None])
def test_crossfades_blend_and_count(
    tmp_path: Path,
    clips: dict[str, Path],
    index: dict[Path, int],
    monkeypatch: pytest.MonkeyPatch,
    chunk_frames: int | None,
) -> None:
    if chunk_frames:
        monkeypatch.setattr(stitch_module, "_CHUNK_BYTES", chunk_frames * W * H * 3 // 2)
    segments = [
        Segment(clips["a"], N),
        Segment(clips["b"], N, crossfade=3),
        # fades in and is faded out of, with a seam drop: the tail ring is reused
        Segment(clips["c"], N, drop_head=1, crossfade=2),
        Segment(clips["a"], N, crossfade=4),
    ]
    report = stitch(segments, tmp_path / "out.mp4", fps=FPS, width=W, height=H, crf=0)
    got = luma_levels(report.output)
    assert report.frames == len(got) == planned_frame_count(segments) == 4 * N - 1 - 9
    # the middle frame of the first 3-frame fade is the even mix of a[7] and b[1]
    a7, b1 = level(0, 7), level(1, 1)
    assert got[7] == (a7 + b1 + 1) // 2
    assert a7 < got[7] < b1
    assert got == model(segments, index)


def test_output_is_faststart_h264_yuv420p_and_reports_progress(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    calls: list[tuple[int, int]] = []
    segments = [Segment(clips["a"], N), Segment(clips["b"], N, drop_head=1)]
    report = stitch(
        segments,
        tmp_path / "out.mp4",
        fps=FPS,
        width=W,
        height=H,
        on_progress=lambda done, total: calls.append((done, total)),
    )
    info = probe_video(report.output)
    assert (info.codec, info.pix_fmt, info.frames) == ("h264", "yuv420p", 2 * N - 1)
    data = report.output.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # +faststart
    assert calls[0] == (0, 2 * N - 1) and calls[-1] == (2 * N - 1, 2 * N - 1)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


@pytest.mark.parametrize("fade", [False, True])
def test_long_audio_is_trimmed_and_faded(
    tmp_path: Path, clips: dict[str, Path], sounds: dict[str, Path], fade: bool
) -> None:
    # fade=False: all cuts, so the video is copied and only the audio encoded
    segments = [Segment(clips["a"], N), Segment(clips["b"], N, crossfade=2 if fade else 0)]
    report = stitch(
        segments,
        tmp_path / "out.mp4",
        fps=FPS,
        width=W,
        height=H,
        audio=AudioTrack(sounds["long"], fade_out_s=0.5),
    )
    assert report.method == ("reencode" if fade else "copy+audio")
    video_s = report.frames / FPS
    info = probe_video(report.output)
    assert info.has_audio and info.audio_codec == "aac"
    assert probe_audio(report.output).duration_s == pytest.approx(video_s, abs=1 / FPS)
    samples = pcm(report.output)
    body, end = samples[1600:4800], samples[-800:]  # 0.1-0.3 s, and the last 50 ms
    assert rms(body) == pytest.approx(TONE_RMS, rel=0.1)  # full level before the fade
    assert rms(end) < 0.15 * TONE_RMS


def test_short_audio_is_padded_with_silence(
    tmp_path: Path, clips: dict[str, Path], sounds: dict[str, Path]
) -> None:
    segments = [Segment(clips["a"], N), Segment(clips["b"], N, drop_head=1)]
    report = stitch(
        segments,
        tmp_path / "out.mp4",
        fps=FPS,
        width=W,
        height=H,
        audio=AudioTrack(sounds["short"]),
    )
    video_s = report.frames / FPS
    assert probe_audio(report.output).duration_s == pytest.approx(video_s, abs=1 / FPS)
    samples = pcm(report.output)
    assert rms(samples[1600:4800]) == pytest.approx(TONE_RMS, rel=0.1)  # the 0.4 s tone
    assert rms(samples[int(0.6 * 16000) :]) < 0.02 * TONE_RMS  # then silence up to the end


@pytest.mark.parametrize(
    ("segments", "match"),
    [
        ([], "at least one segment"),
        ([Segment(Path("a.mp4"), 9, crossfade=2)], "first segment cannot cross-fade"),
        ([Segment(Path("a.mp4"), 9, drop_head=9)], "drop_head=9"),
        ([Segment(Path("a.mp4"), 0)], "frames must be at least 1"),
        (
            [Segment(Path("a.mp4"), 9), Segment(Path("b.mp4"), 9, drop_head=5, crossfade=5)],
            "longer than the segment's 4 usable",
        ),
        (
            [
                Segment(Path("a.mp4"), 9),
                Segment(Path("b.mp4"), 9, crossfade=5),
                Segment(Path("c.mp4"), 9, crossfade=5),
            ],
            "would overlap",
        ),
    ],
)
def test_invalid_segments_are_refused(segments: list[Segment], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        validate_segments(segments)


@pytest.mark.parametrize(
    ("declared", "clip", "match"),
    [(N + 1, "a", f"declare frames={N}"), (N, "small", "32x24 but the video is 64x48")],
)
def test_clips_that_do_not_match_the_plan_are_refused(
    tmp_path: Path, clips: dict[str, Path], declared: int, clip: str, match: str
) -> None:
    segments = [Segment(clips["a"], N), Segment(clips[clip], declared, drop_head=1)]
    with pytest.raises(ValueError, match=match):
        stitch(segments, tmp_path / "out.mp4", fps=FPS, width=W, height=H)
    assert list(tmp_path.iterdir()) == []


def _children() -> set[int]:
    # Other fixtures (e.g. the session's S3 server) may own children: compare, don't demand none.
    return {p.pid for p in psutil.Process().children(recursive=True)}


def test_an_encoder_failure_leaves_nothing_behind(tmp_path: Path, clips: dict[str, Path]) -> None:
    before = _children()
    segments = [Segment(clips["a"], N), Segment(clips["b"], N, drop_head=1)]
    with pytest.raises(FFmpegError, match=r"(?i)preset"):
        stitch(segments, tmp_path / "out.mp4", fps=FPS, width=W, height=H, preset="no-such")
    assert list(tmp_path.iterdir()) == []
    assert _children() <= before


def test_an_interrupt_kills_the_children_and_leaves_nothing_behind(
    tmp_path: Path, clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stitch_module, "_CHUNK_BYTES", W * H * 3 // 2)
    monkeypatch.setattr(stitch_module, "_PROGRESS_EVERY_S", 0.0)
    seen_children: list[int] = []
    before = _children()

    def interrupt(done: int, total: int) -> None:
        if done:
            seen_children.append(len(_children() - before))
            raise KeyboardInterrupt

    segments = [Segment(clips["a"], N), Segment(clips["b"], N, drop_head=1)]
    with pytest.raises(KeyboardInterrupt):
        stitch(segments, tmp_path / "o.mp4", fps=FPS, width=W, height=H, on_progress=interrupt)
    assert seen_children and seen_children[0] >= 2  # decoder and encoder were running
    assert list(tmp_path.iterdir()) == []
    assert _children() <= before
