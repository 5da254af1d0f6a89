"""The worker's errors, in one place: the handler reports them and the engines raise them.

Kept apart from the handler so that the engines never import it (the handler imports them).
"""

from __future__ import annotations

from videokit.errors import VideoKitError

__all__ = ["OOM_TEXT", "JobInputError", "JobTooLargeError", "WorkerOOMError", "is_cuda_oom"]

OOM_TEXT = "CUDA out of memory"


class JobInputError(VideoKitError):
    """The job's input is invalid; retrying the same input will fail the same way.

    The message always starts with ``invalid input:`` so clients (and people reading a FAILED job)
    can tell a caller mistake from a worker failure without parsing anything else.
    """

    def __init__(self, problem: str, *, hint: str | None = None) -> None:
        super().__init__(f"invalid input: {problem}", hint=hint)


class JobTooLargeError(JobInputError):
    """The job cannot fit in this worker's GPU memory, by the engine's admission check.

    An input error, so not retried: the same job on the same card would only run out of memory
    after paying for the GPU time. The hint names the largest size that fits.
    """


class WorkerOOMError(VideoKitError):
    """The GPU ran out of memory. Transient: the same job may fit on a retry or a larger GPU."""

    transient = True


def is_cuda_oom(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is CUDA running out of memory.

    Recognises ``torch.cuda.OutOfMemoryError`` by name, so torch is never imported here (the
    preview engine has no torch), and any error whose message says "CUDA out of memory" (what
    older torch and many wrappers raise as a plain RuntimeError).
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for cls in type(current).__mro__:
            if cls.__name__ == "OutOfMemoryError" and cls.__module__.startswith("torch"):
                return True
        if OOM_TEXT in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False
