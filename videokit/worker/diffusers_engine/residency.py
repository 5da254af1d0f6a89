"""A module whose weights live in pinned CPU memory and visit the GPU only while it runs.

For Wan's UMT5 text encoder (~11 GB in bf16): it runs once per job, for a fraction of a second,
and otherwise holds memory that a 720p job's activations need. The CPU copy is made once (pinned,
so the copy back is a fast DMA); moving off the GPU re-points the parameters at it, no copy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["SwappedModule"]


class SwappedModule:
    """Moves ``module`` between ``device`` and a pinned host copy made on first use."""

    def __init__(self, module: Any, device: str) -> None:
        self.module = module
        self.device = device
        self._host: dict[str, Any] | None = None
        self.on_device = True

    def _tensors(self) -> Iterator[tuple[str, Any, str, Any]]:
        """(qualified name, owning module, attribute, tensor) for every parameter and buffer."""
        for prefix, owner in self.module.named_modules():
            for attr, param in owner._parameters.items():
                if param is not None:
                    yield f"{prefix}.{attr}", owner, attr, param
            for attr, buffer in owner._buffers.items():
                if buffer is not None:
                    yield f"{prefix}.{attr}", owner, attr, buffer

    def _host_copy(self) -> dict[str, Any]:
        if self._host is None:
            import torch

            pin = self.device.startswith("cuda") and torch.cuda.is_available()
            self._host = {}
            for name, _, _, tensor in self._tensors():
                copy = tensor.detach().to("cpu")
                self._host[name] = copy.pin_memory() if pin else copy
        return self._host

    def offload(self) -> None:
        """Point every weight at its host copy; the device memory is freed with the last use."""
        if not self.on_device:
            return
        host = self._host_copy()
        for name, owner, attr, tensor in self._tensors():
            if attr in owner._parameters:
                tensor.data = host[name]
            else:
                owner._buffers[attr] = host[name]
        self.on_device = False

    def load(self) -> None:
        """Copy the weights back onto the device (asynchronously from pinned memory)."""
        if self.on_device:
            return
        for _, owner, attr, tensor in self._tensors():
            moved = tensor.to(self.device, non_blocking=True)
            if attr in owner._parameters:
                tensor.data = moved
            else:
                owner._buffers[attr] = moved
        self.on_device = True

    @contextlib.contextmanager
    def on_device_while(self, needed: bool) -> Iterator[None]:
        """Around a text encoding: on the device inside, and off it after when ``needed``."""
        self.load()
        if not needed:
            yield
            return
        try:
            yield
        finally:
            self.offload()
