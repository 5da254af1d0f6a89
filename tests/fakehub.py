"""A stand-in for the Hugging Face Hub, injected where the workers take a hub client.

The engines (``load_engine(hub=...)``, :class:`videokit.worker.common.HubClient`) and
``workers/download_models.py`` (``main(argv, hub=...)``) call two ``huggingface_hub`` functions,
``snapshot_download`` and ``hf_hub_download``; :class:`FakeHub` has both, with the arguments and
behaviour the workers rely on, and serves repositories from folders on disk: the file
``<remote>/<owner>/<name>/<path>`` is ``<path>`` in the repository ``<owner>/<name>``. Nothing
is patched: the code under test receives this object instead of the module.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from types import SimpleNamespace
from typing import Any

__all__ = ["FakeHub"]


@dataclass
class FakeHub:
    """Serves ``remote``'s folders as Hub repositories and records every call.

    ``calls`` holds ``("snapshot" | "file", arguments)`` in call order; ``hf_home`` the
    ``HF_HOME`` each call ran under (the download script points it at a scratch folder).
    ``declared_sizes`` (``"<repo_id>/<path>"`` -> bytes) makes a dry run report a file at the
    size of the real model's, without writing gigabytes.
    """

    remote: Path
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    hf_home: list[str | None] = field(default_factory=list)
    declared_sizes: dict[str, int] = field(default_factory=dict)

    def add(self, repo_id: str, path: str, data: bytes) -> None:
        """Put ``data`` at ``path`` in the repository ``repo_id``."""
        target = self.remote / repo_id / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    def add_tree(self, repo_id: str, source: Path, under: str = "") -> None:
        """Put a copy of the folder ``source`` into ``repo_id`` (below ``under``, if given)."""
        shutil.copytree(source, self.remote / repo_id / under, dirs_exist_ok=True)

    def snapshot_download(self, repo_id: str, **kwargs: Any) -> Any:
        """The repository's files matching ``allow_patterns`` (fnmatch, where ``*`` also matches
        ``/``, as huggingface_hub matches) into ``local_dir``; a file already there with the
        same content is left alone. ``dry_run=True``: what would be fetched, with its size."""
        self._record("snapshot", {"repo_id": repo_id, **kwargs})
        source = self._repo(repo_id)
        patterns = kwargs.get("allow_patterns")
        if isinstance(patterns, str):
            patterns = [patterns]
        matched = [
            path
            for path in sorted(source.rglob("*"))
            if path.is_file()
            and (
                patterns is None
                or any(fnmatch(path.relative_to(source).as_posix(), p) for p in patterns)
            )
        ]
        if kwargs.get("dry_run"):
            return [
                SimpleNamespace(
                    filename=(name := path.relative_to(source).as_posix()),
                    file_size=self.declared_sizes.get(f"{repo_id}/{name}", path.stat().st_size),
                )
                for path in matched
            ]
        local = Path(kwargs["local_dir"])
        for path in matched:
            self._copy(path, local / path.relative_to(source))
        return str(local)

    def hf_hub_download(self, repo_id: str, filename: str, **kwargs: Any) -> str:
        """``filename`` of ``repo_id`` into ``local_dir``, at the same relative path."""
        self._record("file", {"repo_id": repo_id, "filename": filename, **kwargs})
        path = self._repo(repo_id) / filename
        if not path.is_file():
            raise FileNotFoundError(f"the stand-in Hub has no {filename} in {repo_id}")
        target = Path(kwargs["local_dir"]) / filename
        self._copy(path, target)
        return str(target)

    def _record(self, kind: str, arguments: dict[str, Any]) -> None:
        self.calls.append((kind, arguments))
        self.hf_home.append(os.environ.get("HF_HOME"))

    def _repo(self, repo_id: str) -> Path:
        root = self.remote / repo_id
        if not root.is_dir():
            raise FileNotFoundError(f"the stand-in Hub has no repository {repo_id}")
        return root

    @staticmethod
    def _copy(source: Path, target: Path) -> None:
        if target.is_file() and target.read_bytes() == source.read_bytes():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
