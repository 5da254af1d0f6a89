"""What the GPU benchmarks of both models share: the ``--option`` parser, the capture of the
latents a pipeline decodes, and the PSNR of a bf16 VAE against an fp32 one on those latents.

Imported by ``gpu_wan.py`` and ``gpu_qwen.py`` as a sibling module (each runs as a script),
with the way both end a run: :func:`report_run`, whose last stderr line ``gpu_worker.py`` reads.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from videokit.errors import VideoKitError
from videokit.worker.diffusers_engine.options import OPTION_NAMES

__all__ = [
    "capturing_decode",
    "checkpoint_weights",
    "parse_option",
    "report_run",
    "vae_psnr",
]


def parse_option(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` (an engine option of docs/workers.md) → (name, value); argparse's type."""
    name, sep, value = text.partition("=")
    if not sep or name.strip() not in OPTION_NAMES:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected NAME=VALUE, NAME one of {', '.join(OPTION_NAMES)}"
        )
    return name.strip(), value.strip()


@contextlib.contextmanager
def capturing_decode(vae: Any, into: list[torch.Tensor]) -> Iterator[None]:
    """Keep a copy of each latent tensor the pipeline hands ``vae.decode`` while the block runs."""
    decode = vae.decode

    def capture(latents: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        into.append(latents.detach().clone())
        return decode(latents, *args, **kwargs)

    vae.decode = capture
    try:
        yield
    finally:
        del vae.decode  # the class's own method again


def vae_psnr(vae: Any, latents: torch.Tensor, weights: Mapping[str, torch.Tensor]) -> float:
    """PSNR (dB) of the bf16 VAE's decode of ``latents`` against the fp32 VAE's, as 8-bit pixels.

    Both decoders are copies of ``vae`` holding ``weights`` (the model's own, before any dtype
    change: fp32 for Wan, bf16 for Qwen), each in its dtype, as a worker would load them; both
    get the same values (the latents rounded to bf16 once, so the bf16 one is not fed a coarser
    input). The pixels are compared after the 8-bit rounding a delivered frame gets, where
    banding would show.
    """
    same = latents.to(torch.bfloat16)
    pixels: list[torch.Tensor] = []
    for dtype in (torch.float32, torch.bfloat16):
        model = copy.deepcopy(vae).to(dtype)
        model.load_state_dict(weights)  # copied into the copy's dtype
        with torch.inference_mode():
            out = model.decode(same.to(dtype), return_dict=False)[0]
        pixels.append(((out.float().clamp(-1, 1) + 1) * 127.5).round())
        del model, out
    mse = float(torch.mean((pixels[0] - pixels[1]) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def checkpoint_weights(module: Any) -> dict[str, torch.Tensor]:
    """A CPU copy of ``module``'s weights as they are (kept off the GPU: the job's peak is not
    the copy's)."""
    return {
        name: tensor.detach().to("cpu", copy=True) for name, tensor in module.state_dict().items()
    }


def report_run(bench: Callable[[], dict[str, Any]], json_out: Path | None) -> int:
    """Run ``bench`` and print its JSON result (also to ``json_out``): 0. An option refused, as
    the worker would refuse it (FP8 without torchao, an admission turned down): one ``refused:``
    line, the last on stderr, 2. Anything else: the traceback, then one ``failed:`` line, 1 (an
    exception's notes, like the engine's pipeline traceback, come before it)."""
    try:
        result = bench()
    except VideoKitError as exc:
        print(f"refused: {' '.join(exc.message.split())}", file=sys.stderr)
        return 2
    except Exception as exc:
        traceback.print_exc()
        lines = str(exc).strip().splitlines()
        print(f"failed: {type(exc).__name__}: {lines[0][:300] if lines else ''}", file=sys.stderr)
        return 1
    text = json.dumps(result, indent=2)
    print(text)
    if json_out is not None:
        json_out.write_text(text)
    return 0
