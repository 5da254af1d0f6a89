"""What one render writes down as it goes: the manifest, the money it spends, the events it tells.

Shared by the scheduler, the stage runner and the finishing steps, so each of them records its
part the same way: the manifest is saved after every change (atomically), spending is summed in
one place, and every event goes through one emitter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from videokit.pipeline.cache import CacheStore
from videokit.pipeline.events import Event
from videokit.pipeline.manifest import Manifest
from videokit.pipeline.workdir import WorkDir

__all__ = ["Ledger"]


@dataclass
class Ledger:
    workdir: WorkDir
    manifest: Manifest
    cache: CacheStore
    emit: Callable[[Event], None]
    run_id: str
    #: What this render has spent so far (warm-ups included), in USD.
    spent: float = 0.0
    #: The part of ``spent`` that is the client's estimate, not the endpoint's figures.
    estimated: float = 0.0

    def save(self, *, durable: bool = False) -> None:
        """Write the manifest; ``durable`` also fsyncs (when a job id is recorded)."""
        self.manifest.save(self.workdir.manifest_path, durable=durable)

    def spend(self, cost: float, *, estimated: float = 0.0) -> None:
        self.spent += cost
        self.estimated += estimated
        self.manifest.run_cost_usd = round(self.spent, 6)
        self.manifest.run_cost_estimated_usd = round(self.estimated, 6)
