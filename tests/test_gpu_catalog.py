"""Live GPU prices: RunPod's GPU catalog (``/v2/catalog/gpus``), its day-long cache, and ``plan``.

The catalog is a loopback emulator (tests/rest_catalog_emulator.py) answering from the models
written from RunPod's OpenAPI document. ``plan`` runs as a real subprocess with
``VIDEOKIT_RUNPOD_REST_URL`` pointing at it and ``VIDEOKIT_CACHE_DIR`` in the test's directory.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import make_image
from tests.rest_catalog_emulator import CATALOG, CatalogEmulator, catalog_emulator
from videokit.config import Settings
from videokit.costs import BUILT_IN_PRICES, GPU_PRICE_PER_SECOND
from videokit.rest.catalog import (
    CACHE_FILE,
    CatalogError,
    GpuCatalog,
    pool_prices,
    read_catalog,
    user_cache_dir,
)

KEY = "rpa_catalogtestkey0001"
NOW = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)


@pytest.fixture
def emulator() -> Iterator[CatalogEmulator]:
    with catalog_emulator() as running:
        yield running


def _read(
    emulator: CatalogEmulator, cache: Path, *, at: datetime = NOW, refresh: bool = False
) -> GpuCatalog:
    return read_catalog(
        KEY,
        cache_dir=cache,
        base_url=emulator.base_url,
        refresh=refresh,
        clock=lambda: at,
        allow_key_to_any_host=True,
    )


# -- the catalog and its cache


def test_pools_get_the_serverless_rate_per_second_and_their_cards() -> None:
    prices = pool_prices(CATALOG, source="RunPod catalog of 2026-12-07")
    assert set(prices) == {"ADA_80_PRO", "HOPPER_141"}  # the pods-only card has no pool
    assert prices["ADA_80_PRO"].usd_per_second == pytest.approx(3.60 / 3600)
    assert prices["ADA_80_PRO"].card == "H100 SXM 80GB / H100 PCIe 80GB"
    assert prices["HOPPER_141"].card == "H200 SXM 141GB"  # the name already says its memory
    assert prices["HOPPER_141"].source == "RunPod catalog of 2026-12-07"


def test_a_fresh_cache_answers_for_a_day_and_refresh_ignores_it(
    emulator: CatalogEmulator, tmp_path: Path
) -> None:
    first = _read(emulator, tmp_path)
    assert not first.from_cache and first.source == "RunPod catalog of 2026-12-07"
    assert emulator.requests == [f"Bearer {KEY}"]
    assert (tmp_path / CACHE_FILE).is_file()
    assert [p.name for p in tmp_path.iterdir()] == [CACHE_FILE]  # no temporary file left

    later = _read(emulator, tmp_path, at=NOW + timedelta(hours=23))
    assert later.from_cache and later.prices() == first.prices()
    assert len(emulator.requests) == 1

    assert not _read(emulator, tmp_path, at=NOW + timedelta(hours=1), refresh=True).from_cache
    assert len(emulator.requests) == 2
    assert not _read(emulator, tmp_path, at=NOW + timedelta(hours=25)).from_cache  # stale
    assert len(emulator.requests) == 3


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # cut short
        lambda text: "[]",
        lambda text: text.replace('"memory": 80', '"memory": "eighty"'),
        lambda text: text.replace("http://", "https://"),  # another base URL
        lambda text: text.replace("2026-12-07T09:30", "2026-12-08T09:30"),  # from the future
    ],
)
def test_a_cache_that_cannot_be_trusted_is_ignored(
    emulator: CatalogEmulator, tmp_path: Path, damage: Callable[[str], str]
) -> None:
    _read(emulator, tmp_path)
    cache = tmp_path / CACHE_FILE
    cache.write_text(damage(cache.read_text()))
    again = _read(emulator, tmp_path, at=NOW + timedelta(minutes=1))
    assert not again.from_cache and len(emulator.requests) == 2
    assert json.loads(cache.read_text())["version"] == 1  # rewritten whole


def test_the_key_goes_to_a_loopback_host_only_when_allowed(tmp_path: Path) -> None:
    with catalog_emulator(api_key=KEY) as strict:
        with pytest.raises(CatalogError) as refused:
            read_catalog(KEY, cache_dir=tmp_path, base_url=strict.base_url)
        assert strict.requests == [None]
        assert "refused the API key (401)" in refused.value.message
        assert "RUNPOD_API_KEY" in (refused.value.hint or "")
        assert KEY not in str(refused.value)
        assert not (tmp_path / CACHE_FILE).exists()
        _read(strict, tmp_path)
        assert strict.requests[-1] == f"Bearer {KEY}"


def test_an_unreachable_catalog_fails_within_the_deadline(tmp_path: Path) -> None:
    started = datetime.now(UTC)
    with pytest.raises(CatalogError) as failed:
        read_catalog(KEY, cache_dir=tmp_path, base_url=_closed_url(), deadline_s=0.5)
    assert datetime.now(UTC) - started < timedelta(seconds=3)
    assert "/v2/catalog/gpus" in failed.value.message


def test_the_user_cache_dir() -> None:
    home = Path.home()
    assert user_cache_dir({"VIDEOKIT_CACHE_DIR": "/tmp/vk"}) == Path("/tmp/vk")
    assert user_cache_dir({"XDG_CACHE_HOME": "/x/cache"}, platform="linux") == Path(
        "/x/cache/videokit"
    )
    assert user_cache_dir({"XDG_CACHE_HOME": "relative"}, platform="linux") == (
        home / ".cache" / "videokit"
    )
    assert user_cache_dir({}, platform="darwin") == home / "Library" / "Caches" / "videokit"


def test_prices_the_user_set_win_over_the_catalog(tmp_path: Path) -> None:
    catalog = pool_prices(CATALOG, source="RunPod catalog of 2026-12-07")
    env = {"VIDEOKIT_GPU_PRICES": json.dumps({"ADA_80_PRO": 0.002})}
    costs = Settings.resolve(env=env, dotenv=None).cost_model(catalog)
    assert costs.price_per_second("edit") == 0.002
    assert costs.price_source("edit") == "set in VIDEOKIT_GPU_PRICES"
    assert costs.describe_pool("edit") == "ADA_80_PRO (H100 SXM 80GB / H100 PCIe 80GB)"
    assert costs.prices["HOPPER_141"] == pytest.approx(0.0014)
    plain = Settings.resolve(env={}, dotenv=None).cost_model()
    assert plain.price_source("edit") == BUILT_IN_PRICES and plain.describe_pool("edit") == (
        "ADA_80_PRO"
    )


# -- plan


def _closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v2"


def _plan(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    if not (tmp_path / "story.yaml").exists():
        make_image(tmp_path / "ref.png")
        (tmp_path / "story.yaml").write_text(
            "title: Plan\nreference: ref.png\nscenes:\n  - {id: one, edit: at night, motion: drift}\n"
        )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VIDEOKIT_", "RUNPOD_"))}
    return subprocess.run(
        [sys.executable, "-m", "videokit", "plan", "story.yaml", "--out", "out", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**clean, "VIDEOKIT_CACHE_DIR": str(tmp_path / "cache"), **env},
        timeout=120,
    )


def _runpod(emulator: CatalogEmulator, rest_url: str | None = None) -> dict[str, str]:
    return {
        "RUNPOD_API_KEY": KEY,
        "VIDEOKIT_EDIT_ENDPOINT": "edit123",
        "VIDEOKIT_ANIMATE_ENDPOINT": "anim456",
        "VIDEOKIT_RUNPOD_BASE_URL": emulator.base_url,  # the endpoints' health
        "VIDEOKIT_RUNPOD_REST_URL": rest_url or emulator.base_url,  # the catalog
    }


def test_plan_shows_the_catalogs_price_and_card_and_caches_it(
    emulator: CatalogEmulator, tmp_path: Path
) -> None:
    env = _runpod(emulator)
    shown = _plan(tmp_path, env)
    assert shown.returncode == 0, shown.stderr
    today = f"RunPod catalog of {datetime.now(UTC):%Y-%m-%d}"
    line = "on ADA_80_PRO (H100 SXM 80GB / H100 PCIe 80GB), $0.001/s"
    assert f"  edit: {line} ({today})" in shown.stdout
    assert f"  animate: {line} ({today})" in shown.stdout
    assert "built-in table" not in shown.stdout + shown.stderr
    assert emulator.requests == [None]  # asked once, and the key stays with RunPod's own host

    again = _plan(tmp_path, env, "--json")
    assert again.returncode == 0, again.stderr
    assert len(emulator.requests) == 1  # from the cache
    body = json.loads(again.stdout)
    assert body["gpu_prices"]["edit"] == {
        "pool": "ADA_80_PRO",
        "card": "H100 SXM 80GB / H100 PCIe 80GB",
        "usd_per_second": pytest.approx(0.001),
        "source": today,
    }
    assert body["gpu_prices_note"] is None
    # The estimate is at the catalog's rate: $0.001 per GPU second.
    assert body["cost_usd"] == pytest.approx(body["gpu_seconds"] * 0.001, rel=0.01)

    refreshed = _plan(tmp_path, env, "--refresh-prices")
    assert refreshed.returncode == 0, refreshed.stderr
    assert len(emulator.requests) == 2

    # A render bills at the prices plan showed: the cached catalog's, without a request.
    from videokit.backends import create_backend
    from videokit.config import Settings

    (tmp_path / "videokit.toml").write_text("")
    settings = Settings.resolve(
        env={**env, "VIDEOKIT_CACHE_DIR": str(tmp_path / "cache")},
        dotenv=None,
        config_file=tmp_path / "videokit.toml",
    )
    backend = create_backend(None, settings)
    assert backend.costs.price_per_second("animate") == pytest.approx(0.001)  # type: ignore[attr-defined]
    assert len(emulator.requests) == 2


def test_plan_falls_back_to_the_built_in_table_when_the_catalog_is_unreachable(
    emulator: CatalogEmulator, tmp_path: Path
) -> None:
    shown = _plan(tmp_path, _runpod(emulator, rest_url=_closed_url()))
    assert shown.returncode == 0, shown.stderr
    assert f"prices from the {BUILT_IN_PRICES}: RunPod's GPU catalog could not be read" in (
        shown.stdout
    )
    rate = f"${GPU_PRICE_PER_SECOND['ADA_80_PRO']:.3g}/s"
    assert f"  edit: on ADA_80_PRO, {rate} ({BUILT_IN_PRICES})" in shown.stdout
    assert "Traceback" not in shown.stderr and KEY not in shown.stdout + shown.stderr
    assert not (tmp_path / "cache" / CACHE_FILE).exists()


def test_plan_keeps_prices_the_user_set_and_asks_nothing_on_the_preview(
    emulator: CatalogEmulator, tmp_path: Path
) -> None:
    mine = {**_runpod(emulator), "VIDEOKIT_GPU_PRICES": json.dumps({"ADA_80_PRO": 0.002})}
    body = json.loads(_plan(tmp_path, mine, "--json").stdout)
    assert body["gpu_prices"]["animate"]["usd_per_second"] == 0.002
    assert body["gpu_prices"]["animate"]["source"] == "set in VIDEOKIT_GPU_PRICES"
    assert body["gpu_prices"]["animate"]["card"] == "H100 SXM 80GB / H100 PCIe 80GB"
    assert len(emulator.requests) == 1

    preview = {"RUNPOD_API_KEY": KEY, "VIDEOKIT_RUNPOD_REST_URL": emulator.base_url}
    shown = _plan(tmp_path, preview, "--refresh-prices")
    assert shown.returncode == 0, shown.stderr
    assert f"  edit: on ADA_80_PRO, $0.00116/s ({BUILT_IN_PRICES})" in shown.stdout
    assert len(emulator.requests) == 1  # the preview backend asks nothing
