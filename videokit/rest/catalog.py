"""RunPod's GPU catalog (``GET /v2/catalog/gpus``): today's serverless price of each GPU pool.

Each :class:`~videokit.rest.models.GpuType` names its ``pool`` (``ADA_80_PRO``), its card
(``name``, ``memory`` in GB) and ``price.serverless``, the pool's rate in USD per *hour* (the
document gives hourly list prices): it is divided by 3600 here, since the cost model works per
second. A pool with several cards (or rates) shows all the names and costs the highest rate.

The answer is cached as JSON in the user cache dir (:func:`user_cache_dir`) for a day, so ``plan``
asks RunPod at most once a day; ``refresh`` ignores the cache. A cache that cannot be read, is
from another base URL, or from the future is ignored. The whole read is bounded (5 s by default):
a plan never hangs on it. The key goes where :class:`~videokit.rest.client.RunPodRest` sends it:
to RunPod's own API only, unless ``allow_key_to_any_host`` (tests).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from videokit.costs import BUILT_IN_PRICES, PoolPrice
from videokit.errors import VideoKitError
from videokit.rest.client import DEFAULT_REST_URL, RunPodRest
from videokit.rest.models import GpuType, ListGpuTypesResponse

__all__ = [
    "CACHE_FILE",
    "CATALOG_ROUTE",
    "DEADLINE_S",
    "MAX_AGE",
    "CatalogError",
    "GpuCatalog",
    "load_catalog",
    "pool_prices",
    "read_catalog",
    "try_catalog",
    "user_cache_dir",
]

log = logging.getLogger(__name__)

CATALOG_ROUTE = "catalog/gpus"
CACHE_FILE = "gpu-catalog.json"
MAX_AGE = timedelta(days=1)
DEADLINE_S = 5.0  # the whole read, retries included
_CACHE_VERSION = 1


class CatalogError(VideoKitError):
    """RunPod's GPU catalog could not be read (offline, refused key, timeout, odd answer)."""


@dataclass(frozen=True)
class GpuCatalog:
    """The catalog's GPU types as fetched at ``fetched_at`` (UTC) from ``base_url``."""

    gpus: tuple[GpuType, ...]
    fetched_at: datetime
    base_url: str
    from_cache: bool = False

    @property
    def source(self) -> str:
        return f"RunPod catalog of {self.fetched_at.astimezone(UTC):%Y-%m-%d}"

    def prices(self) -> dict[str, PoolPrice]:
        """Pool -> USD per second and cards, for :meth:`videokit.config.Settings.cost_model`."""
        return pool_prices(self.gpus, source=self.source)


def pool_prices(gpus: tuple[GpuType, ...] | list[GpuType], *, source: str) -> dict[str, PoolPrice]:
    """Per pool, the highest serverless rate of its cards (per hour / 3600) and their names.

    Types with no pool or no serverless price (pods only) are left out.
    """
    rates: dict[str, float] = {}
    cards: dict[str, list[str]] = {}
    for gpu in gpus:
        if not gpu.pool or gpu.price.serverless is None:
            continue
        rates[gpu.pool] = max(rates.get(gpu.pool, 0.0), gpu.price.serverless / 3600.0)
        names = cards.setdefault(gpu.pool, [])
        card = _card(gpu)
        if card not in names:
            names.append(card)
    return {
        pool: PoolPrice(usd_per_second=rate, source=source, card=" / ".join(cards[pool]))
        for pool, rate in rates.items()
    }


def _card(gpu: GpuType) -> str:
    """``H100 80GB``: the name, with the memory unless the name already says it."""
    compact = gpu.name.replace(" ", "").lower()
    return gpu.name if f"{gpu.memory}gb" in compact else f"{gpu.name} {gpu.memory}GB"


def user_cache_dir(env: Mapping[str, str] | None = None, *, platform: str = sys.platform) -> Path:
    """``VIDEOKIT_CACHE_DIR`` if set, else ``~/Library/Caches/videokit`` on macOS,
    ``%LOCALAPPDATA%\\videokit\\cache`` on Windows, ``$XDG_CACHE_HOME/videokit`` or
    ``~/.cache/videokit`` elsewhere."""
    environ = os.environ if env is None else env
    if environ.get("VIDEOKIT_CACHE_DIR", "").strip():
        return Path(environ["VIDEOKIT_CACHE_DIR"].strip()).expanduser()
    if platform == "darwin":
        return Path.home() / "Library" / "Caches" / "videokit"
    if platform == "win32" and environ.get("LOCALAPPDATA"):
        return Path(environ["LOCALAPPDATA"]) / "videokit" / "cache"
    xdg = environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "videokit"


def _now() -> datetime:
    return datetime.now(UTC)


async def load_catalog(
    api_key: str | None,
    *,
    cache_dir: Path,
    base_url: str = DEFAULT_REST_URL,
    refresh: bool = False,
    clock: Callable[[], datetime] = _now,
    deadline_s: float = DEADLINE_S,
    allow_key_to_any_host: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
) -> GpuCatalog:
    """The catalog from the cache if it is under a day old (and not ``refresh``), else from
    RunPod (then cached). Raises :class:`CatalogError` saying why it could not be read."""
    path = cache_dir / CACHE_FILE
    now = clock()
    if not refresh:
        cached = _read_cache(path, base_url=base_url, now=now)
        if cached is not None:
            return cached
    try:
        async with asyncio.timeout(deadline_s):
            async with RunPodRest(
                api_key,
                base_url=base_url,
                allow_key_to_any_host=allow_key_to_any_host,
                read_deadline_s=deadline_s,
                timeout_s=deadline_s,
                transport=transport,
            ) as client:
                answer = await client.get(CATALOG_ROUTE, ListGpuTypesResponse)
    except TimeoutError:
        raise CatalogError(
            f"GET {base_url.rstrip('/')}/{CATALOG_ROUTE}: no answer within {deadline_s:g} s",
            hint="check the network, or VIDEOKIT_RUNPOD_REST_URL if you set it",
        ) from None
    except VideoKitError as exc:  # RestError, or ConfigError for a bad base URL
        raise CatalogError(exc.message, hint=exc.hint) from None
    catalog = GpuCatalog(gpus=tuple(answer.gpus), fetched_at=now, base_url=base_url)
    _write_cache(path, catalog)
    return catalog


def read_catalog(api_key: str | None, **options: Any) -> GpuCatalog:
    """:func:`load_catalog` (same keywords) for callers without an event loop (the CLI)."""
    return asyncio.run(load_catalog(api_key, **options))


def try_catalog(
    api_key: str | None, environ: Mapping[str, str], *, refresh: bool = False
) -> tuple[GpuCatalog | None, str | None]:
    """What ``plan`` uses: the catalog, or None and one line saying the built-in table is used
    and why. The base URL is ``VIDEOKIT_RUNPOD_REST_URL`` or RunPod's; only RunPod's gets the key.
    """
    base_url = environ.get("VIDEOKIT_RUNPOD_REST_URL", "").strip() or DEFAULT_REST_URL
    try:
        catalog = read_catalog(
            api_key, cache_dir=user_cache_dir(environ), base_url=base_url, refresh=refresh
        )
    except CatalogError as exc:
        why = exc.message + (f"; {exc.hint}" if exc.hint else "")
        return None, (
            f"prices from the {BUILT_IN_PRICES}: RunPod's GPU catalog could not be read ({why})."
            " The next `videokit plan` asks again."
        )
    return catalog, None


def cached_catalog(
    environ: Mapping[str, str], *, clock: Callable[[], datetime] = _now
) -> GpuCatalog | None:
    """The catalog a recent ``plan`` cached (under a day old), without any request: what
    ``render`` bills with, so it prices jobs as ``plan`` estimated them. None when there is none.
    """
    base_url = environ.get("VIDEOKIT_RUNPOD_REST_URL", "").strip() or DEFAULT_REST_URL
    return _read_cache(user_cache_dir(environ) / CACHE_FILE, base_url=base_url, now=clock())


def _read_cache(path: Path, *, base_url: str, now: datetime) -> GpuCatalog | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("version") != _CACHE_VERSION or document.get("base_url") != base_url:
            return None
        fetched_at = datetime.fromisoformat(document["fetched_at"])
        if fetched_at.tzinfo is None or not timedelta(0) <= now - fetched_at < MAX_AGE:
            return None
        answer = ListGpuTypesResponse.model_validate({"gpus": document["gpus"]})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ValidationError) as exc:
        log.debug("ignoring the GPU catalog cache %s: %s", path, exc)
        return None
    return GpuCatalog(
        gpus=tuple(answer.gpus), fetched_at=fetched_at, base_url=base_url, from_cache=True
    )


def _write_cache(path: Path, catalog: GpuCatalog) -> None:
    """Write the cache atomically (a temporary file renamed over it); a failure only logs."""
    document = {
        "version": _CACHE_VERSION,
        "fetched_at": catalog.fetched_at.isoformat(),
        "base_url": catalog.base_url,
        "gpus": [gpu.model_dump(mode="json") for gpu in catalog.gpus],
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
    except OSError as exc:
        log.debug("could not cache the GPU catalog in %s: %s", path.parent, exc)
        return
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(document, file)
        os.replace(temporary, path)
    except OSError as exc:
        log.debug("could not cache the GPU catalog in %s: %s", path, exc)
        Path(temporary).unlink(missing_ok=True)
