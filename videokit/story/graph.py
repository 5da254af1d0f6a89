"""The scene graph: which scene's output each scene starts from.

Every scene has at most one parent (the scene whose last or edited frame it starts from), so an
acyclic story is a forest. The graph is pure data so it can be property-tested on its own.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["CycleError", "SceneGraph"]


class CycleError(ValueError):
    """Scenes that start from each other in a loop; ``cycle`` lists them in order."""

    def __init__(self, cycle: Sequence[str]) -> None:
        self.cycle = list(cycle)
        super().__init__(" -> ".join([*self.cycle, self.cycle[0]]))


@dataclass(frozen=True)
class SceneGraph:
    ids: tuple[str, ...]
    parent: Mapping[str, str | None]

    @classmethod
    def build(cls, ids: Sequence[str], parent: Mapping[str, str | None]) -> SceneGraph:
        """Build and check the graph; raise :class:`CycleError` on the first cycle found."""
        known = set(ids)
        for scene, dep in parent.items():
            if scene not in known or (dep is not None and dep not in known):
                raise KeyError(f"unknown scene in edge {scene!r} -> {dep!r}")
        graph = cls(tuple(ids), {scene: parent.get(scene) for scene in ids})
        cycle = graph.find_cycle()
        if cycle:
            raise CycleError(cycle)
        return graph

    def find_cycle(self) -> list[str] | None:
        # Each node has out-degree <= 1 (towards its parent), so walking parents finds any cycle.
        done: set[str] = set()
        for start in self.ids:
            path: list[str] = []
            on_path: dict[str, int] = {}
            node: str | None = start
            while node is not None and node not in done:
                if node in on_path:
                    return path[on_path[node] :]
                on_path[node] = len(path)
                path.append(node)
                node = self.parent[node]
            done.update(path)
        return None

    def children(self, scene: str) -> list[str]:
        return [s for s in self.ids if self.parent[s] == scene]

    def roots(self) -> list[str]:
        return [s for s in self.ids if self.parent[s] is None]

    def topological(self) -> list[str]:
        """Parents before children; among ready scenes, file order (so plans read naturally)."""
        index = {scene: i for i, scene in enumerate(self.ids)}
        ready = [index[s] for s in self.roots()]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:
            scene = self.ids[heapq.heappop(ready)]
            order.append(scene)
            for child in self.children(scene):
                heapq.heappush(ready, index[child])
        return order

    def ancestors(self, scene: str) -> list[str]:
        chain: list[str] = []
        node = self.parent[scene]
        while node is not None:
            chain.append(node)
            node = self.parent[node]
        return chain

    def downstream(self, scenes: Iterable[str]) -> set[str]:
        """``scenes`` and every scene that (transitively) starts from one of them."""
        result = set(scenes)
        for scene in self.topological():
            parent = self.parent[scene]
            if parent is not None and parent in result:
                result.add(scene)
        return result

    def longest_chain(self) -> list[str]:
        """The longest run of scenes that each start from the one before: they cannot overlap,
        so it bounds how fast the story renders however many jobs run at once. Earliest in file
        order among equally long chains."""
        length: dict[str, int] = {}
        for scene in self.topological():
            parent = self.parent[scene]
            length[scene] = 1 + (length[parent] if parent is not None else 0)
        if not length:
            return []
        end = max(self.ids, key=lambda scene: length.get(scene, 0))
        return [*reversed(self.ancestors(end)), end]
