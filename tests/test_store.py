"""The user's result store: shared by every story and work dir, one maker per result, prunable.

End-to-end through the real CLI against real ``videokit serve`` endpoints on loopback (jobs are
counted there), and the store's own pieces on disk.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cli_process import cat_project, run_videokit, start_videokit
from tests.endpoints import Servers, serve_workers
from videokit.pipeline.cache import CacheStore
from videokit.pipeline.store import (
    claim,
    clear_in_flight,
    in_flight,
    prune,
    record_in_flight,
    register_workdir,
)


def endpoints(servers: Servers) -> dict[str, str]:
    return {
        "VIDEOKIT_EDIT_ENDPOINT": servers.urls["edit"],
        "VIDEOKIT_ANIMATE_ENDPOINT": servers.urls["animate"],
    }


def runs(servers: Servers) -> int:
    return servers.counters["edit"].runs + servers.counters["animate"].runs


def store_of() -> CacheStore:
    return CacheStore(Path(os.environ["VIDEOKIT_CACHE_DIR"]) / "store")


def assert_consistent(store: CacheStore) -> None:
    """Every entry folder is whole: its meta and every file it lists, with their hashes."""
    for folder in store.root.glob("*/??/*"):
        if folder.name.startswith(".") or folder.parent.parent.name.startswith("."):
            continue
        assert store.get(folder.parent.parent.name, folder.name) is not None, folder


def test_a_renamed_story_rendered_elsewhere_into_another_work_dir_pays_nothing(
    tmp_path: Path,
) -> None:
    story = cat_project(tmp_path / "one")
    with serve_workers() as servers:
        first = run_videokit(story.parent, "render", str(story), "--json", **endpoints(servers))
        assert first.returncode == 0, first.stderr
        assert runs(servers) == 4
        # Another checkout, another name, another directory, another -o.
        other = tmp_path / "two" / "elsewhere"
        copy = cat_project(tmp_path / "two")
        shutil.copy(story, copy.with_name("cat_v2.yaml"))
        other.mkdir()
        again = run_videokit(
            other,
            "render",
            str(copy.with_name("cat_v2.yaml")),
            "-o",
            str(tmp_path / "out" / "cat-80"),
            "--json",
            **endpoints(servers),
        )
        assert again.returncode == 0, again.stderr
        assert runs(servers) == 4  # nothing submitted
    film_one = story.parent / "out" / "cat" / "final.mp4"
    film_two = tmp_path / "out" / "cat-80" / "final.mp4"
    assert film_one.read_bytes() == film_two.read_bytes()
    manifest = json.loads((tmp_path / "out" / "cat-80" / "manifest.json").read_text())
    assert manifest["run_cost_usd"] == 0.0
    assert all(r["animate"]["cached"] for r in manifest["scenes"].values())


def test_two_renders_at_once_that_need_the_same_jobs_run_each_once(tmp_path: Path) -> None:
    story = cat_project(tmp_path / "project")
    with serve_workers(min_job_seconds=3.0) as servers:
        procs = [
            start_videokit(
                story.parent, "render", str(story), "-o", str(out), "--json", **endpoints(servers)
            )
            for out in (tmp_path / "a", tmp_path / "b")
        ]
        outcomes = [proc.communicate(timeout=240) for proc in procs]
        for proc, (_, err) in zip(procs, outcomes, strict=True):
            assert proc.returncode == 0, err
        assert servers.counters["edit"].runs == 1
        assert servers.counters["animate"].runs == 3
    assert (tmp_path / "a" / "final.mp4").read_bytes() == (
        tmp_path / "b" / "final.mp4"
    ).read_bytes()


def test_sigkill_then_a_tiny_prune_then_render_again_completes_on_a_consistent_store(
    tmp_path: Path,
) -> None:
    story = cat_project(tmp_path / "project")
    out = tmp_path / "out"
    with serve_workers(min_job_seconds=1.0) as servers:
        proc = start_videokit(
            story.parent, "render", str(story), "-o", str(out), "--json", **endpoints(servers)
        )
        assert proc.stdout is not None
        done = 0
        for line in proc.stdout:
            event = json.loads(line)
            done += event["type"] == "scene_done"
            if done == 1 and event["type"] == "job_submitted":
                break  # one scene finished, another job in flight
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)
        store = store_of()
        assert_consistent(store)
        pruned = run_videokit(tmp_path, "cache", "prune", "--max-size", "1", "--json")
        assert pruned.returncode == 0, pruned.stderr
        report = json.loads(pruned.stdout)
        assert report["remaining"] == 0
        assert_consistent(store)
        again = run_videokit(
            story.parent, "render", str(story), "-o", str(out), "--json", **endpoints(servers)
        )
        assert again.returncode == 0, again.stderr
        assert_consistent(store)
    shown = json.loads(run_videokit(tmp_path, "cache", "--json").stdout)
    assert shown["entries"] == 4  # the store holds this render's results again


def test_a_pruned_store_is_refilled_from_the_work_dirs_own_scene_files(tmp_path: Path) -> None:
    story = cat_project(tmp_path / "project")
    with serve_workers() as servers:
        first = run_videokit(story.parent, "render", str(story), "--json", **endpoints(servers))
        assert first.returncode == 0, first.stderr
        pruned = run_videokit(tmp_path, "cache", "prune", "--max-size", "0", "--include-used")
        assert pruned.returncode == 0, pruned.stderr
        assert "removed 4 entries" in pruned.stdout
        again = run_videokit(story.parent, "render", str(story), "--json", **endpoints(servers))
        assert again.returncode == 0, again.stderr
        assert runs(servers) == 4  # put back from out/cat/scenes/, not paid again


def test_prune_keeps_what_a_work_dir_needs_unless_asked(tmp_path: Path) -> None:
    store = CacheStore(tmp_path / "store")
    kept = store.put("animate", "a" * 64, {"clip.mp4": b"x" * 100}, {})
    old = store.put("animate", "b" * 64, {"clip.mp4": b"y" * 100}, {})
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "manifest.json").write_text("{}")
    register_workdir(store, workdir, "Cat", {f"animate/{kept.key}"})
    long_ago = time.time() - 90 * 86400
    for entry in (kept, old):
        os.utime(entry.folder / "meta.json", (long_ago, long_ago))
    report = prune(store, older_than_s=30 * 86400)
    assert (report.removed, report.kept_in_use, report.remaining) == (1, 1, 1)
    assert store.get("animate", kept.key) is not None and store.get("animate", old.key) is None
    assert prune(store, max_bytes=0, keep_used=False).removed == 1
    # A work dir that is gone protects nothing.
    shutil.rmtree(workdir)
    assert list(store.entries()) == []


def test_an_entry_of_an_old_per_work_dir_cache_is_adopted_into_the_store(tmp_path: Path) -> None:
    legacy = CacheStore(tmp_path / "work" / "cache")
    old = legacy.put("edit", "c" * 64, {"image.png": b"png"}, {"job_id": "j1"})
    store = CacheStore(tmp_path / "store", legacy=legacy.root)
    adopted = store.get("edit", old.key)
    assert adopted is not None and adopted.folder.is_relative_to(store.root)
    assert adopted.file("image.png").read_bytes() == b"png" and adopted.meta["job_id"] == "j1"


def test_one_claim_per_result_and_in_flight_jobs_are_recorded(tmp_path: Path) -> None:
    store = CacheStore(tmp_path / "store")
    order: list[str] = []

    async def maker(name: str, hold_s: float) -> None:
        waited: list[bool] = []
        async with claim(
            store, "animate", "k" * 64, on_wait=lambda: waited.append(True), poll_s=0.02
        ):
            order.append(f"{name} in" + (" after waiting" if waited else ""))
            await asyncio.sleep(hold_s)
            order.append(f"{name} out")

    async def both() -> None:
        first = asyncio.create_task(maker("a", 0.2))
        await asyncio.sleep(0.05)
        await asyncio.gather(first, maker("b", 0.0))

    asyncio.run(both())
    assert order == ["a in", "a out", "b in after waiting", "b out"]
    record_in_flight(store, "animate", "k" * 64, "job-1", "http://box/v2/animate")
    flight: Any = in_flight(store, "animate", "k" * 64)
    assert (flight.job_id, flight.endpoint) == ("job-1", "http://box/v2/animate")
    clear_in_flight(store, "animate", "k" * 64)
    assert in_flight(store, "animate", "k" * 64) is None


@pytest.mark.parametrize("spec", ["12XB", "1.5.2GB", "lots"])
def test_prune_refuses_a_size_it_cannot_read(tmp_path: Path, spec: str) -> None:
    refused = run_videokit(tmp_path, "cache", "prune", "--max-size", spec)
    assert refused.returncode == 2
    assert "is not a size" in refused.stderr


def test_a_render_in_another_work_dir_re_attaches_to_a_killed_renders_job(tmp_path: Path) -> None:
    story = cat_project(tmp_path / "project")
    with serve_workers(min_job_seconds=3.0) as servers:
        proc = start_videokit(
            story.parent,
            "render",
            str(story),
            "-o",
            str(tmp_path / "a"),
            "--json",
            **endpoints(servers),
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            if json.loads(line)["type"] == "job_submitted":
                break  # the first job is running on the server
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)
        assert runs(servers) == 1
        other = run_videokit(
            story.parent, "render", str(story), "-o", str(tmp_path / "b"), **endpoints(servers)
        )
        assert other.returncode == 0, other.stderr
        # The killed render's job was re-attached to, not paid for again.
        assert runs(servers) == 4
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["scenes"]["sit"]["animate"]["attempts"][0]["status"] == "COMPLETED"
