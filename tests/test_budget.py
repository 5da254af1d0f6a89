"""A render's budget (``--max-cost``): refused up front over the estimate, and no job submitted
that could take spend past it. Real ``videokit serve`` endpoints, priced as self-hosted GPUs, and
the real CLI; jobs are counted on the servers.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli_process import cat_project, run_videokit
from tests.endpoints import Servers, serve_workers

# USD per second of a self-hosted GPU: the estimate of this story is ~3 s of jobs (0.47 s per
# clip, 1.6 s for the edit), ~$0.030.
PRICE = "0.01"


def priced(servers: Servers) -> dict[str, str]:
    return {
        "VIDEOKIT_EDIT_ENDPOINT": servers.urls["edit"],
        "VIDEOKIT_ANIMATE_ENDPOINT": servers.urls["animate"],
        "VIDEOKIT_EDIT_SELF_HOSTED_PRICE": PRICE,
        "VIDEOKIT_ANIMATE_SELF_HOSTED_PRICE": PRICE,
    }


def runs(servers: Servers) -> int:
    return servers.counters["edit"].runs + servers.counters["animate"].runs


def test_a_budget_under_the_estimate_is_refused_before_any_job(tmp_path: Path) -> None:
    story = cat_project(tmp_path)
    with serve_workers() as servers:
        refused = run_videokit(
            tmp_path, "render", str(story), "--max-cost", "0.01", **priced(servers)
        )
        assert refused.returncode == 2, refused.stderr
        assert "could cost up to $0.030" in refused.stderr
        assert "over the budget of $0.010" in refused.stderr
        assert runs(servers) == 0
        # The same limit from the environment (max_cost in videokit.toml works the same way).
        again = run_videokit(
            tmp_path, "render", str(story), VIDEOKIT_MAX_COST="0.01", **priced(servers)
        )
        assert again.returncode == 2 and runs(servers) == 0


def test_a_budget_that_runs_out_mid_render_submits_nothing_past_it(tmp_path: Path) -> None:
    story = cat_project(tmp_path)
    # Each job really takes 2 s, far over its estimate: the first one spends most of the budget.
    with serve_workers(min_job_seconds=2.0) as servers:
        spent = run_videokit(
            tmp_path, "render", str(story), "--max-cost", "0.031", "--json", **priced(servers)
        )
        assert spent.returncode == 1, spent.stderr
        assert "the budget of $0.031 would be passed" in spent.stderr
        assert "2 scene(s) were not rendered: hat, leave" in spent.stderr
        assert "Traceback" not in spent.stderr
        assert (servers.counters["animate"].runs, servers.counters["edit"].runs) == (1, 0)
        events = [json.loads(line) for line in spent.stdout.splitlines()]
        started = next(e for e in events if e["type"] == "render_started")
        assert started["budget_usd"] == 0.031 and started["estimate_high_usd"] > 0.029
        [cost] = [e for e in events if e["type"] == "cost"]
        assert cost["total_usd"] >= 0.02  # the running total, in the --json stream
        # What finished is cached: with more budget, only the two held-back scenes are paid for.
        done = run_videokit(tmp_path, "render", str(story), "--json", **priced(servers))
        assert done.returncode == 0, done.stderr
        assert (servers.counters["animate"].runs, servers.counters["edit"].runs) == (3, 1)


def test_the_preview_has_no_budget_to_keep(tmp_path: Path) -> None:
    story = cat_project(tmp_path)
    free = run_videokit(tmp_path, "render", str(story), "--max-cost", "0.001", "-q")
    assert free.returncode == 0, free.stderr
