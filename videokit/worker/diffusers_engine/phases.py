"""Splits one pipeline call into phases with module hooks (the pipelines report nothing).

Text encoding: the text encoder's forward calls. Conditioning: from the call's start to the
first transformer call, less text encoding (image preprocessing and VAE encodes). Denoising:
from the first transformer call to the last step callback. Decode: from there to the end. On a
GPU every boundary synchronises the device (a few times per job, next to seconds-long steps),
so the split measures work done rather than work queued.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["PHASES", "PhaseTimer"]

#: The phases every job record and benchmark reports, in order.
PHASES: tuple[str, ...] = ("text_encode", "condition", "denoise", "decode", "total")


class PhaseTimer:
    """Times the phases of one pipeline call: :meth:`attached` around it, :meth:`step_done` from
    the step callback, :meth:`finish` after it. ``transformer_calls`` counts the denoiser's
    forward calls (two per step with CFG)."""

    def __init__(
        self, text_encoders: Sequence[Any], transformers: Sequence[Any], cuda: Any
    ) -> None:
        self._text_encoders = [m for m in text_encoders if m is not None]
        self._transformers = [m for m in transformers if m is not None]
        self._cuda = cuda  # the torch.device to synchronise, or None on the CPU
        self.transformer_calls = 0
        self.steps = 0
        self._text_s = 0.0
        self._text_started: float | None = None
        self._started = 0.0
        self._denoise_started: float | None = None
        self._last_step: float | None = None

    def _now(self) -> float:
        if self._cuda is not None:
            import torch

            torch.cuda.synchronize(self._cuda)
        return time.perf_counter()

    def _text_pre(self, *_: Any) -> None:
        self._text_started = self._now()

    def _text_post(self, *_: Any) -> None:
        if self._text_started is not None:
            self._text_s += self._now() - self._text_started
            self._text_started = None

    def _transformer_pre(self, *_: Any) -> None:
        self.transformer_calls += 1
        if self._denoise_started is None:
            self._denoise_started = self._now()

    @contextlib.contextmanager
    def attached(self) -> Iterator[PhaseTimer]:
        """Hooks in place for the call (removed after, so they never outlive the job)."""
        handles = [
            hook
            for module in self._text_encoders
            for hook in (
                module.register_forward_pre_hook(self._text_pre),
                module.register_forward_hook(self._text_post),
            )
        ]
        handles += [m.register_forward_pre_hook(self._transformer_pre) for m in self._transformers]
        self.transformer_calls = self.steps = 0
        self._text_s = 0.0
        self._denoise_started = self._last_step = self._text_started = None
        self._started = self._now()
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def step_done(self) -> None:
        self.steps += 1
        self._last_step = self._now()

    def finish(self) -> dict[str, int]:
        """The phases in milliseconds, keyed by :data:`PHASES`."""
        ended = self._now()
        denoise_started = self._denoise_started or ended
        last_step = self._last_step or denoise_started

        def ms(seconds: float) -> int:
            return max(0, round(seconds * 1000))

        return {
            "text_encode": ms(self._text_s),
            "condition": ms(denoise_started - self._started - self._text_s),
            "denoise": ms(last_step - denoise_started),
            "decode": ms(ended - last_step),
            "total": ms(ended - self._started),
        }
