"""Settings, resolved in one order everywhere: explicit argument, then the environment
(``VIDEOKIT_*``, ``RUNPOD_API_KEY``, then a ``.env`` file), then the story file, then defaults.

Nothing is read at import time: :meth:`Settings.resolve` reads the environment when called, and
tests pass ``env=`` instead of patching ``os.environ``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from videokit.errors import ConfigError

__all__ = ["Settings", "read_dotenv"]


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse ``.env``: ``KEY=value`` lines, ``export`` prefixes, quotes and ``#`` comments."""
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return values
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.replace("_", "").isalnum():
            raise ConfigError(
                f"{path}:{number}: expected KEY=value", hint="fix or remove this line of .env"
            )
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


def _positive_int(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{name} must be a whole number of at least 1, got {text!r}")
    return value


@dataclass(frozen=True)
class Settings:
    backend: str | None = None
    out_dir: Path = Path("out")
    concurrency: int | None = None

    @classmethod
    def resolve(
        cls,
        *,
        backend: str | None = None,
        out_dir: Path | str | None = None,
        concurrency: int | None = None,
        env: Mapping[str, str] | None = None,
        dotenv: Path | None = Path(".env"),
    ) -> Settings:
        environ = cls.environment(env=env, dotenv=dotenv)
        if backend is None:
            backend = environ.get("VIDEOKIT_BACKEND") or None
        if out_dir is None:
            out_dir = environ.get("VIDEOKIT_OUT") or "out"
        if concurrency is None and environ.get("VIDEOKIT_CONCURRENCY"):
            concurrency = _positive_int("VIDEOKIT_CONCURRENCY", environ["VIDEOKIT_CONCURRENCY"])
        if concurrency is not None and concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
        return cls(backend=backend, out_dir=Path(out_dir), concurrency=concurrency)

    @staticmethod
    def environment(
        *, env: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")
    ) -> dict[str, str]:
        """The process environment layered over ``.env`` (real variables win)."""
        merged = read_dotenv(dotenv) if dotenv is not None else {}
        merged.update(os.environ if env is None else env)
        return merged
