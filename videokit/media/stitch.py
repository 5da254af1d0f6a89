"""Stitch scene clips into one MP4, frame-exactly, with flat memory.

Two paths:

* **copy** – every boundary is a plain cut and the clips share one H.264 configuration (read
  from their MP4 sample tables, see ``read_mp4_video_track``): the concat demuxer copies the
  packets (``-c copy``), which takes a fraction of a second and is bit-exact. With an audio
  track the video is still copied and only the audio is encoded (``copy+audio``).
* **reencode** – seam drops (``drop_head``) or cross-fades need new pixels. ONE ffmpeg decoder
  reads all clips through the concat demuxer and writes raw yuv420p to a pipe; a Python loop
  counts frames per segment, skips dropped heads and blends cross-fades from a small ring of
  the previous segment's last frames; ONE encoder takes the frames (and the audio) from a pipe.
  Memory therefore does not grow with the number of clips: there is never more than one
  decoder, and the only buffers are one read chunk and the longest cross-fade. We stay in
  yuv420p end to end because a round trip through RGB shifts colours (see the notes on
  moviepy).

Either way the result is written to a hidden temporary name next to ``output`` and renamed only
after its frames have been counted and match ``planned_frame_count``: a failure or an
interrupt never leaves a half-written file behind, and child processes are killed.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from videokit.errors import FFmpegError
from videokit.media.ffmpeg import (
    UNTAGGED,
    ColorTags,
    RawVideoReader,
    RawVideoWriter,
    frame_nbytes,
    run_ffmpeg,
    write_concat_list,
)
from videokit.media.probe import (
    AudioInfo,
    Mp4VideoTrack,
    probe_audio,
    probe_video,
    probe_videos,
    read_mp4_video_track,
)

__all__ = [
    "AudioTrack",
    "Segment",
    "StitchReport",
    "planned_frame_count",
    "stitch",
    "validate_segments",
]

StitchMethod = Literal["copy", "copy+audio", "reencode"]

# Bytes per read from the decoder pipe: large reads amortise the Python-level loop, and 8 MiB
# (13 frames at 832x480) is still nothing next to the encoder's own buffers.
_CHUNK_BYTES = 8 << 20
# On small machines the decoder is cheap (about 5 % of the encoder's work) and frame threads
# only add latency and memory; x264 keeps its automatic thread count.
_DECODER_THREADS = 1
_PROGRESS_EVERY_S = 0.2
# Sample rates the AAC encoder accepts; anything else is resampled to 48 kHz.
_AAC_RATES = frozenset(
    {96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350}
)
_AUDIO_BITRATE = "192k"


@dataclass(frozen=True)
class Segment:
    """One clip in the stitched video.

    ``drop_head``: frames skipped at the start (the seam drop of a continuous shot: frame 0 of a
    continuation clip duplicates the previous clip's last frame). ``crossfade``: frames this
    segment overlaps (cross-fades) with the previous one; 0 is a cut.
    """

    path: Path
    frames: int
    drop_head: int = 0
    crossfade: int = 0


@dataclass(frozen=True)
class AudioTrack:
    """A soundtrack laid under the whole video: trimmed (and faded out) or padded to fit."""

    path: Path
    fade_out_s: float = 1.0


@dataclass(frozen=True)
class StitchReport:
    """What ``stitch`` produced; ``frames`` is counted in the output file, not assumed."""

    output: Path
    frames: int
    fps: float
    width: int
    height: int
    method: StitchMethod
    seconds: float


def planned_frame_count(segments: Sequence[Segment]) -> int:
    """Frames the stitched video will have: ``sum(frames - drop_head) - sum(crossfade)``."""
    return sum(s.frames - s.drop_head for s in segments) - sum(s.crossfade for s in segments)


def _name(i: int, seg: Segment) -> str:
    return f"segment {i} ({Path(seg.path).name})"


def validate_segments(segments: Sequence[Segment]) -> None:
    """Raise ValueError, saying what to change, if the segments cannot be stitched as declared.

    A segment's usable frames (``frames - drop_head``) must cover both its incoming and its
    outgoing cross-fade without the two overlapping.
    """
    if not segments:
        raise ValueError("nothing to stitch: pass at least one segment")
    for i, seg in enumerate(segments):
        name = _name(i, seg)
        if seg.frames < 1:
            raise ValueError(f"{name}: frames must be at least 1, got {seg.frames}")
        if not 0 <= seg.drop_head < seg.frames:
            raise ValueError(
                f"{name}: drop_head={seg.drop_head} must be between 0 and frames-1="
                f"{seg.frames - 1}; a segment must keep at least one frame"
            )
        if seg.crossfade < 0:
            raise ValueError(f"{name}: crossfade must be >= 0 frames, got {seg.crossfade}")
        if i == 0 and seg.crossfade:
            raise ValueError(
                f"{name}: the first segment cannot cross-fade (nothing comes before it); "
                "set its crossfade to 0"
            )
        usable = seg.frames - seg.drop_head
        if seg.crossfade > usable:
            raise ValueError(
                f"{name}: crossfade={seg.crossfade} is longer than the segment's {usable} usable "
                "frames (frames - drop_head); shorten the cross-fade"
            )
        if i > 0 and seg.crossfade:
            prev = segments[i - 1]
            prev_usable = prev.frames - prev.drop_head
            if prev.crossfade + seg.crossfade > prev_usable:
                raise ValueError(
                    f"{name}: crossfade={seg.crossfade} needs the last {seg.crossfade} frames of "
                    f"{_name(i - 1, prev)}, which has {prev_usable} usable frames and already "
                    f"cross-fades {prev.crossfade} of them into its predecessor; the two fades "
                    "would overlap, so shorten one of them"
                )


def _check_output_args(fps: float, width: int, height: int, crf: int) -> None:
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if width < 2 or height < 2 or width % 2 or height % 2:
        raise ValueError(f"width and height must be even and >= 2 (yuv420p), got {width}x{height}")
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be between 0 and 51, got {crf}")


class _ClipFacts(Protocol):
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def fps(self) -> float: ...
    @property
    def frames(self) -> int: ...


def _check_clips(
    segments: Sequence[Segment],
    infos: Sequence[_ClipFacts],
    *,
    fps: float,
    width: int,
    height: int,
) -> None:
    for i, (seg, info) in enumerate(zip(segments, infos, strict=True)):
        name = _name(i, seg)
        if (info.width, info.height) != (width, height):
            raise ValueError(
                f"{name}: the clip is {info.width}x{info.height} but the video is "
                f"{width}x{height}; all clips must have the output's size (re-render or resize it)"
            )
        if abs(info.fps - fps) > 1e-3 * fps:
            raise ValueError(
                f"{name}: the clip runs at {info.fps:g} fps but the video at {fps:g} fps; "
                "all clips must share the output's frame rate"
            )
        if info.frames != seg.frames:
            raise ValueError(
                f"{name}: the clip has {info.frames} frames but the segment declares "
                f"{seg.frames}; declare frames={info.frames}"
            )


def _can_copy(segments: Sequence[Segment], tracks: Sequence[Mp4VideoTrack | None]) -> bool:
    """True when the packets can be copied: cuts only, and one H.264 4:2:0 configuration.

    An MP4 track stores one decoder configuration (SPS/PPS); copying clips encoded with other
    settings behind it makes strict players decode them with the wrong parameters.
    """
    if any(s.drop_head or s.crossfade for s in segments):
        return False
    if any(t is None or t.avc_config is None or not t.yuv420p_8bit for t in tracks):
        return False
    return len({t.avc_config for t in tracks if t is not None}) == 1


def _audio_args(
    track: AudioTrack, info: AudioInfo, duration: float, input_index: int
) -> tuple[list[str], list[str]]:
    """ffmpeg input and output options that lay ``track`` under ``duration`` seconds of video."""
    d = f"{duration:.6f}"
    # Timestamps from the sample count: a stream that starts late (MP3 priming) still lines up
    # with frame 0, and atrim/apad then measure the same clock as the video.
    chain = ["asetpts=N/SR/TB", f"atrim=end={d}"]
    if info.duration_s > duration + 1e-3 and track.fade_out_s > 0:
        fade = min(track.fade_out_s, duration)
        chain.append(f"afade=t=out:st={duration - fade:.6f}:d={fade:.6f}")
    chain.append(f"apad=whole_dur={d}")
    rate = [] if info.sample_rate in _AAC_RATES else ["-ar", "48000"]
    extra_input = ["-i", str(track.path)]
    extra_output = [
        "-map", f"{input_index}:a:0", "-af", ",".join(chain),
        "-c:a", "aac", "-b:a", _AUDIO_BITRATE, *rate,
    ]  # fmt: skip
    return extra_input, extra_output


def stitch(
    segments: Sequence[Segment],
    output: Path,
    *,
    fps: float,
    width: int,
    height: int,
    audio: AudioTrack | None = None,
    crf: int = 18,
    preset: str = "medium",
    on_progress: Callable[[int, int], None] | None = None,
) -> StitchReport:
    """Join ``segments`` into ``output`` (H.264 yuv420p MP4, faststart), frame-exactly.

    Stream-copies when every boundary is a cut and the clips share one H.264 configuration;
    otherwise re-encodes with ``crf``/``preset`` (see the module docstring). ``audio`` is
    trimmed and faded out, or padded with silence, to the video's duration and encoded AAC.
    ``on_progress(done_frames, total_frames)`` is called at the start, every ~0.2 s and at the
    end. Raises ValueError for segments or clips that do not fit together (before any work),
    FileNotFoundError for a missing file and FFmpegError when ffmpeg fails.
    """
    started = time.perf_counter()
    segs = list(segments)
    validate_segments(segs)
    _check_output_args(fps, width, height, crf)
    output = Path(output)
    total = planned_frame_count(segs)
    paths = [Path(s.path) for s in segs]
    # Reading the MP4 sample tables in Python costs ~1 ms for 48 clips, where ffmpeg needs
    # ~0.5 s to open them: that is what keeps a stream-copy stitch well under a second.
    tracks = [read_mp4_video_track(p) for p in paths]
    copy = _can_copy(segs, tracks)
    color = UNTAGGED
    if copy:
        _check_clips(
            segs, [t for t in tracks if t is not None], fps=fps, width=width, height=height
        )
    else:
        infos = probe_videos(paths)
        _check_clips(segs, infos, fps=fps, width=width, height=height)
        color = infos[0].color
    audio_info = probe_audio(audio.path) if audio is not None else None

    output.parent.mkdir(parents=True, exist_ok=True)
    # Same directory, so the final os.replace is an atomic rename; hidden, so that nothing
    # mistakes it for a finished video.
    partial = output.with_name(f".{output.stem}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}.mp4")
    method: StitchMethod
    if on_progress:
        on_progress(0, total)
    try:
        with tempfile.TemporaryDirectory(prefix="videokit-stitch-") as tmp:
            clips = write_concat_list(
                paths, Path(tmp) / "clips.ffconcat", [s.frames / fps for s in segs]
            )
            audio_in: list[str] = []
            audio_out: list[str] = []
            if audio is not None and audio_info is not None:
                audio_in, audio_out = _audio_args(audio, audio_info, total / fps, input_index=1)
            if copy:
                method = "copy+audio" if audio is not None else "copy"
                run_ffmpeg(
                    [
                        "-f", "concat", "-safe", "0", "-i", str(clips), *audio_in,
                        "-map", "0:v:0", "-c:v", "copy", *audio_out,
                        "-movflags", "+faststart", "-f", "mp4", str(partial),
                    ],
                    what=f"joining {len(segs)} clips into {output.name}",
                )  # fmt: skip
            else:
                method = "reencode"
                _reencode(
                    segs,
                    clips,
                    partial,
                    fps=fps,
                    width=width,
                    height=height,
                    crf=crf,
                    preset=preset,
                    audio_in=audio_in,
                    audio_out=audio_out,
                    color=color,
                    total=total,
                    on_progress=on_progress,
                )
        written = read_mp4_video_track(partial)
        frames = written.frames if written is not None else probe_video(partial).frames
        if frames != total:
            raise FFmpegError(
                f"stitching {output.name}: the result has {frames} frames, expected {total}"
            )
        # Right count but a gap in the timestamps would still play as a frozen picture.
        if written is not None and abs(written.duration_s - total / fps) > 1.5 / fps:
            raise FFmpegError(
                f"stitching {output.name}: the video lasts {written.duration_s:.3f} s, expected "
                f"{total / fps:.3f} s for {total} frames at {fps:g} fps (a gap between clips?)"
            )
        os.replace(partial, output)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if on_progress:
        on_progress(total, total)
    return StitchReport(
        output=output,
        frames=frames,
        fps=fps,
        width=width,
        height=height,
        method=method,
        seconds=time.perf_counter() - started,
    )


def _blend(
    prev: npt.NDArray[np.uint8], cur: npt.NDArray[np.uint8], i: int, n: int
) -> npt.NDArray[np.uint8]:
    """Frame ``i`` of an ``n``-frame cross-fade: weight of ``cur`` is (i+1)/(n+1), rounded.

    Linear per plane works in yuv420p because chroma is stored offset (128 = grey), so a
    weighted mean of two frames' planes is the plane of their weighted mean.
    """
    d, w = n + 1, i + 1
    # 32-bit sums cannot overflow for any fade length; fades are few frames, so speed is moot.
    acc = prev.astype(np.uint32) * (d - w) + cur.astype(np.uint32) * w + d // 2
    return (acc // d).astype(np.uint8)


def _reencode(
    segs: Sequence[Segment],
    clips: Path,
    partial: Path,
    *,
    fps: float,
    width: int,
    height: int,
    crf: int,
    preset: str,
    audio_in: Sequence[str],
    audio_out: Sequence[str],
    color: ColorTags,
    total: int,
    on_progress: Callable[[int, int], None] | None,
) -> None:
    frame_bytes = frame_nbytes(width, height, "yuv420p")
    chunk = np.empty((max(1, _CHUNK_BYTES // frame_bytes), frame_bytes), dtype=np.uint8)
    longest_fade = max(s.crossfade for s in segs)
    # The last frames of the segment being read, kept for the next segment's cross-fade.
    tail = np.empty((longest_fade, frame_bytes), dtype=np.uint8)
    declared = sum(s.frames for s in segs)

    reader = RawVideoReader(
        ["-f", "concat", "-safe", "0", "-i", str(clips)],
        width=width,
        height=height,
        pixel_format="yuv420p",
        threads=_DECODER_THREADS,
        what=f"decoding the clips for {partial.name}",
    )
    writer: RawVideoWriter | None = None
    try:
        writer = RawVideoWriter(
            partial,
            width=width,
            height=height,
            fps=fps,
            pixel_format="yuv420p",
            crf=crf,
            preset=preset,
            extra_input=audio_in,
            extra_output=[*audio_out, "-f", "mp4"],
            # The clips' own tags: their yuv passes through untouched, so it keeps their meaning.
            color=color,
        )
        seg_index = 0
        local = 0  # index of the next decoded frame within segs[seg_index]
        decoded = 0
        last_report = time.monotonic()
        while True:
            got = reader.readinto(chunk)
            if not got:
                break
            if decoded + got > declared:
                raise FFmpegError(
                    f"the clips decoded to more than the {declared} frames the segments declare"
                )
            row = 0
            while row < got:
                seg = segs[seg_index]
                next_fade = segs[seg_index + 1].crossfade if seg_index + 1 < len(segs) else 0
                take = min(got - row, seg.frames - local)
                _route(
                    seg,
                    next_fade,
                    local,
                    chunk[row : row + take],
                    tail,
                    writer,
                )
                local += take
                row += take
                if local == seg.frames:
                    seg_index += 1
                    local = 0
            decoded += got
            if on_progress and time.monotonic() - last_report >= _PROGRESS_EVERY_S:
                last_report = time.monotonic()
                on_progress(writer.frames_written, total)
        reader.close()
        if decoded != declared:
            raise FFmpegError(
                f"the clips decoded to {decoded} frames, but the segments declare {declared}"
            )
        writer.close()
    except BaseException:
        reader.abort()
        if writer is not None:
            writer.abort()
        raise
    if writer.frames_written != total:
        raise FFmpegError(f"wrote {writer.frames_written} frames, expected {total}")


def _route(
    seg: Segment,
    next_fade: int,
    start: int,
    frames: npt.NDArray[np.uint8],
    tail: npt.NDArray[np.uint8],
    writer: RawVideoWriter,
) -> None:
    """Send decoded frames ``start .. start+len(frames)-1`` of ``seg`` where they belong.

    In segment order: dropped head, blended into the previous segment's tail, written as they
    are, or held back in ``tail`` for the next segment's cross-fade. Validation guarantees the
    blend range ends before the held-back range starts, so ``tail`` is read before it is reused.
    """
    fade_end = seg.drop_head + seg.crossfade
    hold_from = seg.frames - next_fade
    stop = start + len(frames)
    # Blend: needs the previous segment's tail, frame by frame.
    for k in range(max(start, seg.drop_head), min(stop, fade_end)):
        i = k - seg.drop_head
        writer.write(_blend(tail[i], frames[k - start], i, seg.crossfade))
    # Pass through: one write for the whole run.
    lo, hi = max(start, fade_end), min(stop, hold_from)
    if lo < hi:
        writer.write_frames(frames[lo - start : hi - start])
    # Hold back: copied, because the chunk buffer is overwritten by the next read.
    lo, hi = max(start, hold_from), stop
    if lo < hi:
        tail[lo - hold_from : hi - hold_from] = frames[lo - start : hi - start]
