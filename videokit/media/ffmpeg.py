"""The bundled ffmpeg (from imageio-ffmpeg) and the ways we talk to it.

``run_ffmpeg`` for one-shot commands, ``RawVideoWriter`` for streaming raw frames into an H.264
encoder and ``RawVideoReader`` for streaming decoded raw frames out of a decoder. Raw frames go
through pipes rather than temporary image files: it keeps memory flat and the disk quiet.

Both streaming classes drain ffmpeg's stderr on a background thread: a child that logs more than
a pipe buffer (64 KiB) while we block on its stdin/stdout would otherwise deadlock us.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import subprocess
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import IO, Literal

import numpy as np
import numpy.typing as npt

from videokit.errors import FFmpegError

__all__ = [
    "BT709",
    "UNTAGGED",
    "ColorTags",
    "PixelFormat",
    "RawVideoReader",
    "RawVideoWriter",
    "ffmpeg_exe",
    "frame_nbytes",
    "run_ffmpeg",
    "write_concat_list",
]

PixelFormat = Literal["rgb24", "yuv420p"]

# Linux pipes hold 64 KiB by default, so one 832x480 frame costs ~10 read/write syscalls and as many
# context switches between ffmpeg and us. 1 MiB (the unprivileged maximum) cuts that tenfold.
_PIPE_SIZE = 1 << 20


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary: ``VIDEOKIT_FFMPEG`` if set, else imageio-ffmpeg's bundled one."""
    override = os.environ.get("VIDEOKIT_FFMPEG")
    if override:
        return override
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def _tail(text: bytes | str, lines: int = 15) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "\n".join(text.strip().splitlines()[-lines:])


def run_ffmpeg(args: Sequence[str], *, timeout: float = 600.0, what: str = "ffmpeg") -> str:
    """Run ffmpeg with ``args`` (no binary name, no -y); return its stderr. Raise FFmpegError."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", *args]
    try:
        # subprocess.run kills the child on any exception, KeyboardInterrupt included.
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise FFmpegError(f"{what} took longer than {timeout:.0f} s and was stopped") from exc
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise FFmpegError(f"{what} failed (exit {proc.returncode}):\n{_tail(stderr)}")
    return stderr


def frame_nbytes(width: int, height: int, pixel_format: PixelFormat) -> int:
    """Bytes of one raw frame: 3 per pixel for rgb24, 1.5 for yuv420p (chroma at quarter size)."""
    if pixel_format == "rgb24":
        return width * height * 3
    if width % 2 or height % 2:
        raise ValueError(f"yuv420p needs even dimensions, got {width}x{height}")
    return width * height * 3 // 2


def write_concat_list(
    paths: Iterable[Path], list_file: Path, durations: Sequence[float] | None = None
) -> Path:
    """Write an ffmpeg concat-demuxer list of absolute ``paths`` (use with ``-safe 0``).

    ``durations`` (seconds, one per path) fixes where each file's timestamps start: without
    it the demuxer uses each file's container duration, which is the *longest* stream, so a
    clip whose audio outlasts its video would leave a gap in the copied video's timeline.
    """
    lines = ["ffconcat version 1.0"]
    paths = list(paths)
    if durations is not None and len(durations) != len(paths):
        raise ValueError(f"{len(durations)} durations for {len(paths)} files")
    for k, path in enumerate(paths):
        # The demuxer's quoting: inside '...' a quote is written as '\'' (close, escaped, reopen).
        quoted = str(Path(path).resolve()).replace("'", "'\\''")
        lines.append(f"file '{quoted}'")
        if durations is not None:
            lines.append(f"duration {durations[k]:.9f}")
    list_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return list_file


@dataclass(frozen=True)
class ColorTags:
    """Colour metadata of a video stream, in ffmpeg's names (None: not tagged).

    ``space`` is the YUV matrix (``-colorspace``), ``range`` is ``tv`` (limited) or ``pc`` (full).
    """

    space: str | None = None
    primaries: str | None = None
    transfer: str | None = None
    range: str | None = None

    def args(self, *, matrix: bool = True) -> list[str]:
        """ffmpeg options that set these tags; ``matrix=False`` leaves out space and range."""
        pairs = [("-color_primaries", self.primaries), ("-color_trc", self.transfer)]
        if matrix:
            pairs += [("-colorspace", self.space), ("-color_range", self.range)]
        return [item for flag, value in pairs if value for item in (flag, value)]


BT709 = ColorTags("bt709", "bt709", "bt709", "tv")
UNTAGGED = ColorTags()


def _grow_pipe(stream: IO[bytes] | None) -> None:
    if stream is None:
        return
    # Best effort: an older kernel or a lowered pipe-max-size only costs speed.
    with contextlib.suppress(OSError, AttributeError, ValueError):
        fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_SIZE)


class _StderrDrain:
    """Read a child's stderr on a daemon thread and keep the last lines for error messages."""

    def __init__(self, stream: IO[bytes], keep: int = 200) -> None:
        self._lines: collections.deque[bytes] = collections.deque(maxlen=keep)
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream: IO[bytes]) -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in stream:
                self._lines.append(line)

    def tail(self, lines: int = 15) -> str:
        self._thread.join(timeout=5.0)
        return _tail(b"".join(self._lines), lines)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.kill()
    with contextlib.suppress(Exception):
        proc.wait(timeout=10)
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.close()


class RawVideoWriter:
    """Stream raw frames (H×W×3 uint8 RGB, or planar yuv420p bytes) into an H.264 MP4.

    Used as a context manager; leaving the block without an exception finalises the file,
    an exception kills the encoder and removes the partial output. ``extra_input`` adds inputs
    after the raw pipe (input #1 is the first of them, e.g. an audio file); ``extra_output``
    adds output options before the file name (e.g. ``-map 1:a:0 -c:a aac``).

    ``color`` tags the output (BT.709 by default). RGB frames are converted with that matrix;
    yuv420p frames are declared to be in it already and pass through unconverted. (Tagging only
    the output would make ffmpeg convert yuv420p from its "unspecified" guess, BT.601, to
    BT.709: a colour shift that also costs ~40 % of an ultrafast encode.)
    """

    def __init__(
        self,
        path: Path,
        *,
        width: int,
        height: int,
        fps: float,
        pixel_format: PixelFormat = "rgb24",
        crf: int = 18,
        preset: str = "medium",
        extra_input: Sequence[str] = (),
        extra_output: Sequence[str] = (),
        threads: int | None = None,
        color: ColorTags = BT709,
    ) -> None:
        self.path = Path(path)
        self.width = width
        self.height = height
        self.pixel_format = pixel_format
        self.frames_written = 0
        self._frame_bytes = frame_nbytes(width, height, pixel_format)
        cmd = [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
            "-f", "rawvideo", "-pix_fmt", pixel_format, "-s", f"{width}x{height}",
            "-framerate", f"{fps}",
            # Input-side tags: primaries/transfer only reach the output through the frames, and
            # yuv frames that already carry the output's matrix are not converted.
            *color.args(matrix=pixel_format == "yuv420p"),
            "-i", "pipe:0",
            *extra_input,
            "-map", "0:v:0",
            "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
            # Tagged so players do not guess the matrix (and shift colours) for HD sizes.
            *color.args(),
            *(["-threads", str(threads)] if threads else []),
            *extra_output,
            "-movflags", "+faststart",
            str(self.path),
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        assert self._proc.stdin is not None and self._proc.stderr is not None
        self._stdin: IO[bytes] = self._proc.stdin
        _grow_pipe(self._stdin)
        self._drain = _StderrDrain(self._proc.stderr)

    @property
    def pid(self) -> int:
        """Process id of the encoder (for resource accounting)."""
        return self._proc.pid

    def write(self, frame: npt.NDArray[np.uint8] | bytes | bytearray | memoryview) -> None:
        """Write exactly one frame."""
        data = _as_bytes(frame)
        if data.nbytes != self._frame_bytes:
            raise ValueError(
                f"frame has {data.nbytes} bytes, expected {self._frame_bytes} "
                f"({self.width}x{self.height} {self.pixel_format})"
            )
        self._send(data, 1)

    def write_frames(self, frames: npt.NDArray[np.uint8] | bytes | bytearray | memoryview) -> int:
        """Write several whole frames back to back (one syscall-sized write); return the count."""
        data = _as_bytes(frames)
        count, rest = divmod(data.nbytes, self._frame_bytes)
        if rest:
            raise ValueError(
                f"{data.nbytes} bytes is not a whole number of {self._frame_bytes}-byte frames "
                f"({self.width}x{self.height} {self.pixel_format})"
            )
        if count:
            self._send(data, count)
        return count

    def _send(self, data: memoryview, count: int) -> None:
        try:
            self._stdin.write(data)
        except (BrokenPipeError, ValueError) as exc:
            # ValueError: the pipe was already closed after an earlier failure.
            self._proc.wait()
            raise FFmpegError(
                f"encoder for {self.path.name} exited early:\n{self._drain.tail()}"
            ) from exc
        self.frames_written += count

    def close(self) -> None:
        """Finish the file; raise FFmpegError if the encoder failed."""
        if not self._stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self._stdin.close()
        code = self._proc.wait()
        if code != 0:
            raise FFmpegError(
                f"encoding {self.path.name} failed (exit {code}):\n{self._drain.tail()}"
            )

    def abort(self) -> None:
        """Kill the encoder and delete the partial output."""
        _kill(self._proc)
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> RawVideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _as_bytes(data: npt.NDArray[np.uint8] | bytes | bytearray | memoryview) -> memoryview:
    view = np.ascontiguousarray(data).data if isinstance(data, np.ndarray) else memoryview(data)
    # A flat byte view: ``nbytes`` and slicing then mean bytes whatever the array's shape.
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


class RawVideoReader:
    """Decode a video into a pipe of raw frames (rgb24 or planar yuv420p), frame-exactly.

    ``input_args`` are ffmpeg input options ending in ``-i SOURCE`` (e.g. a concat list with
    ``-f concat -safe 0``); the first video stream is decoded with ``-fps_mode passthrough`` so
    no frame is ever duplicated or dropped. ``width``/``height`` must be the decoded size.
    Use as a context manager; ``close()`` raises FFmpegError when the decoder failed.
    """

    def __init__(
        self,
        input_args: Sequence[str],
        *,
        width: int,
        height: int,
        pixel_format: PixelFormat = "rgb24",
        threads: int | None = None,
        what: str = "decoder",
    ) -> None:
        self.width = width
        self.height = height
        self.pixel_format = pixel_format
        self.frame_bytes = frame_nbytes(width, height, pixel_format)
        self.what = what
        cmd = [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
            *(["-threads", str(threads)] if threads else []),
            *input_args,
            "-map", "0:V:0", "-fps_mode", "passthrough",
            "-f", "rawvideo", "-pix_fmt", pixel_format, "pipe:1",
        ]  # fmt: skip
        # bufsize=0: stdout is the raw pipe, so readinto() fills our buffer without a copy.
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
        )
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._stdout = self._proc.stdout
        _grow_pipe(self._stdout)
        self._drain = _StderrDrain(self._proc.stderr)

    @property
    def pid(self) -> int:
        """Process id of the decoder (for resource accounting)."""
        return self._proc.pid

    def readinto(self, buffer: npt.NDArray[np.uint8] | bytearray | memoryview) -> int:
        """Fill ``buffer`` with whole frames; return how many (fewer only at end of stream).

        Raises FFmpegError if the stream ends in the middle of a frame.
        """
        view = _as_bytes(buffer)
        want = view.nbytes - view.nbytes % self.frame_bytes
        got = 0
        while got < want:
            n = self._stdout.readinto(view[got:want])  # type: ignore[attr-defined]
            if not n:
                break
            got += n
        if got % self.frame_bytes:
            self._proc.wait()
            raise FFmpegError(
                f"{self.what}: stream ended inside a frame ({got % self.frame_bytes} stray bytes); "
                f"is the video really {self.width}x{self.height}?\n{self._drain.tail()}"
            )
        return got // self.frame_bytes

    def frames(self) -> Iterator[npt.NDArray[np.uint8]]:
        """Yield frames: H×W×3 arrays for rgb24, flat ``W*H*3/2`` arrays (Y, U, V) for yuv420p."""
        shape = (
            (self.height, self.width, 3) if self.pixel_format == "rgb24" else (self.frame_bytes,)
        )
        while True:
            frame = np.empty(shape, dtype=np.uint8)
            if not self.readinto(frame):
                return
            yield frame

    def close(self) -> None:
        """Wait for the decoder; raise FFmpegError if it failed."""
        with contextlib.suppress(OSError):
            self._stdout.close()
        code = self._proc.wait()
        if code != 0:
            raise FFmpegError(f"{self.what} failed (exit {code}):\n{self._drain.tail()}")

    def abort(self) -> None:
        """Kill the decoder now."""
        _kill(self._proc)

    def __enter__(self) -> RawVideoReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
