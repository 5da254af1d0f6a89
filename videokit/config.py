"""Settings, resolved in one order everywhere: explicit argument, then the environment
(``VIDEOKIT_*``, ``RUNPOD_API_KEY``, then a ``.env`` file), then the story file, then defaults.

Nothing is read at import time: :meth:`Settings.resolve` reads the environment when called, and
tests pass ``env=`` instead of patching ``os.environ``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from videokit.errors import ConfigError

if TYPE_CHECKING:
    from videokit.story.model import Story

__all__ = ["Secret", "Settings", "read_dotenv"]


class Secret:
    """A credential that never shows itself in a repr, a log line or an exception."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


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
    """Resolved settings. Secrets are kept out of ``repr`` (see :class:`Secret`)."""

    backend: str | None = None
    out_dir: Path = Path("out")
    concurrency: int | None = None
    api_key: Secret | None = None
    edit_endpoint: str | None = None
    animate_endpoint: str | None = None
    base_url: str | None = None
    gpu: Mapping[str, str] = field(default_factory=dict)
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def resolve(
        cls,
        *,
        backend: str | None = None,
        out_dir: Path | str | None = None,
        concurrency: int | None = None,
        api_key: str | None = None,
        edit_endpoint: str | None = None,
        animate_endpoint: str | None = None,
        base_url: str | None = None,
        story: Story | None = None,
        env: Mapping[str, str] | None = None,
        dotenv: Path | None = Path(".env"),
    ) -> Settings:
        environ = cls.environment(env=env, dotenv=dotenv)
        endpoints = story.endpoints if story is not None else None

        def pick(explicit: str | None, variable: str, field: str) -> str | None:
            in_story = getattr(endpoints, field) if endpoints is not None else None
            return explicit or environ.get(variable) or in_story or None

        edit = pick(edit_endpoint, "VIDEOKIT_EDIT_ENDPOINT", "edit")
        animate = pick(animate_endpoint, "VIDEOKIT_ANIMATE_ENDPOINT", "animate")
        base = pick(base_url, "VIDEOKIT_RUNPOD_BASE_URL", "base_url")
        key = api_key or environ.get("RUNPOD_API_KEY") or None
        if backend is None:
            backend = environ.get("VIDEOKIT_BACKEND") or ("runpod" if edit or animate else None)
        if out_dir is None:
            out_dir = environ.get("VIDEOKIT_OUT") or "out"
        if concurrency is None and environ.get("VIDEOKIT_CONCURRENCY"):
            concurrency = _positive_int("VIDEOKIT_CONCURRENCY", environ["VIDEOKIT_CONCURRENCY"])
        if concurrency is not None and concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
        gpu = {
            stage: environ[f"VIDEOKIT_{stage.upper()}_GPU"]
            for stage in ("edit", "animate")
            if environ.get(f"VIDEOKIT_{stage.upper()}_GPU")
        }
        return cls(
            backend=backend,
            out_dir=Path(out_dir),
            concurrency=concurrency,
            api_key=Secret(key) if key else None,
            edit_endpoint=edit,
            animate_endpoint=animate,
            base_url=base,
            gpu=gpu,
            environ=environ,
        )

    @staticmethod
    def environment(
        *, env: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")
    ) -> dict[str, str]:
        """The process environment layered over ``.env`` (real variables win)."""
        merged = read_dotenv(dotenv) if dotenv is not None else {}
        merged.update(os.environ if env is None else env)
        return merged
