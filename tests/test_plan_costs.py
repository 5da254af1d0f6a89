"""Cost as RunPod bills it: the endpoint facts in the settings (idle timeout, start time, a deploy
spec, self-hosted prices), the cost model's warm-to-cold range, and ``plan`` showing it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_image
from videokit.config import Settings
from videokit.config_file import deploy_facts
from videokit.costs import (
    DEFAULT_START_S,
    RUNPOD_IDLE_TIMEOUT_S,
    CostModel,
    OutputPrice,
    StageJob,
    is_self_hosted,
)
from videokit.deploy.spec import load_spec
from videokit.errors import ConfigError
from videokit.protocol import AnimateRequest, EditRequest, MediaInput

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
IMAGE = MediaInput(base64="iVBORw0KGgo=")


def _resolve(env: dict[str, str], config: Path | None = None, **kwargs: object) -> Settings:
    return Settings.resolve(env=env, dotenv=None, config_file=config, **kwargs)  # type: ignore[arg-type]


def _toml(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


# -- settings -------------------------------------------------------------------------------------


def test_endpoint_facts_resolve_environment_over_file_over_deploy_spec(tmp_path: Path) -> None:
    spec = tmp_path / "deploy.yaml"
    spec.write_text((EXAMPLES / "deploy.yaml").read_text())
    config = _toml(
        tmp_path / "videokit.toml",
        """\
        deploy_spec = "deploy.yaml"
        [edit]
        start_seconds = 0
        [animate]
        idle_timeout = 30
        start_seconds = 45.5
        self_hosted_price = 0.0002
        """,
    )
    settings = _resolve({"VIDEOKIT_EDIT_IDLE_TIMEOUT": "12"}, config)
    assert settings.api_key is None  # (a loop over these settings once clobbered it)
    assert settings.deploy_spec == spec
    assert settings.idle_timeouts == {"edit": 12.0, "animate": 30.0}
    assert settings.start_seconds == {"edit": 0.0, "animate": 45.5}
    assert settings.max_workers == {"edit": 2, "animate": 3}  # the spec's workers_max
    assert settings.self_hosted_prices == {"animate": 0.0002}
    assert settings.fact_sources["edit.idle_timeout"] == "VIDEOKIT_EDIT_IDLE_TIMEOUT"
    assert settings.fact_sources["animate.idle_timeout"] == f"{config}: animate.idle_timeout"

    only_spec = _resolve({"VIDEOKIT_DEPLOY_SPEC": str(spec)})
    assert only_spec.idle_timeouts == {"edit": 60.0, "animate": 60.0}  # idle_timeout: 60
    costs = only_spec.cost_model()
    assert costs.idle_timeout("edit") == 60 and costs.max_workers == {"edit": 2, "animate": 3}
    assert costs.fact_sources["edit.idle_timeout"] == f"deploy spec {spec}"
    # Nothing set: RunPod's default idle timeout and the documented start times.
    bare = _resolve({}).cost_model()
    assert bare.idle_timeout("animate") == RUNPOD_IDLE_TIMEOUT_S == 5
    assert bare.start_time("animate") == DEFAULT_START_S["animate"]


def test_the_deploy_spec_is_read_as_videokit_deploy_reads_it(tmp_path: Path) -> None:
    # config may not import videokit.deploy (.importlinter): its small reader must agree.
    spec = load_spec(EXAMPLES / "deploy.yaml")
    facts = deploy_facts(EXAMPLES / "deploy.yaml", where="VIDEOKIT_DEPLOY_SPEC")
    for stage, worker in spec.workers.items():
        assert facts[stage].idle_timeout_s == worker.idle_timeout
        assert facts[stage].max_workers == worker.workers_max
    # Defaults as deploy's, and REQUEST_COUNT scaling sends no idle timeout (RunPod's stays).
    other = tmp_path / "d.yaml"
    other.write_text(
        "name_prefix: v\nworkers:\n  edit: {image: 'x:1', gpus: [ADA_80_PRO]}\n"
        "  animate: {image: 'y:1', gpus: [ADA_80_PRO], idle_timeout: 90, "
        "scaler_type: REQUEST_COUNT}\n"
    )
    read = deploy_facts(other, where="deploy_spec")
    parsed = load_spec(other)
    assert read["edit"].idle_timeout_s == parsed.workers["edit"].idle_timeout == 5
    assert read["edit"].max_workers == parsed.workers["edit"].workers_max == 2
    assert read["animate"].idle_timeout_s == 5


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"VIDEOKIT_ANIMATE_IDLE_TIMEOUT": "0"}, "VIDEOKIT_ANIMATE_IDLE_TIMEOUT"),
        ({"VIDEOKIT_EDIT_START_SECONDS": "-1"}, "VIDEOKIT_EDIT_START_SECONDS"),
        ({"VIDEOKIT_EDIT_SELF_HOSTED_PRICE": "free"}, "VIDEOKIT_EDIT_SELF_HOSTED_PRICE"),
        ({"VIDEOKIT_MAX_COST": "0"}, "VIDEOKIT_MAX_COST"),
        ({"VIDEOKIT_MAX_COST": "nan"}, "VIDEOKIT_MAX_COST"),
        ({"VIDEOKIT_DEPLOY_SPEC": "/nowhere/deploy.yaml"}, "VIDEOKIT_DEPLOY_SPEC"),
    ],
)
def test_bad_values_name_their_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _resolve(env)
    assert named in caught.value.message and caught.value.hint


def test_bad_values_in_the_file_name_their_key(tmp_path: Path) -> None:
    for text, key in (
        ("max_cost = -2\n", "max_cost"),
        ("[edit]\nidle_timeout = 'long'\n", "edit.idle_timeout"),
        ("[animate]\nself_hosted_price = -1\n", "animate.self_hosted_price"),
        ("[edit]\nidle_timout = 5\n", "edit.idle_timout"),
    ):
        config = _toml(tmp_path / "videokit.toml", text)
        with pytest.raises(ConfigError) as caught:
            _resolve({}, config)
        assert key in caught.value.message, text
    bad_spec = tmp_path / "bad.yaml"
    bad_spec.write_text("workers:\n  edit: {image: x, idle_timeout: soon}\n")
    config = _toml(tmp_path / "videokit.toml", 'deploy_spec = "bad.yaml"\n')
    with pytest.raises(ConfigError) as caught:
        _resolve({}, config)
    assert "deploy_spec" in caught.value.message
    assert "workers.edit.idle_timeout" in caught.value.message


def test_cache_dir_and_max_cost_resolve_argument_over_environment_over_file(
    tmp_path: Path,
) -> None:
    config = _toml(tmp_path / "videokit.toml", 'cache_dir = "cache"\nmax_cost = 2.5\n')
    from_file = _resolve({}, config)
    assert from_file.cache_dir == tmp_path / "cache"  # relative to the file
    assert from_file.max_cost == 2.5
    env = {"VIDEOKIT_CACHE_DIR": "/var/tmp/vk", "VIDEOKIT_MAX_COST": "1"}
    from_env = _resolve(env, config)
    assert (from_env.cache_dir, from_env.max_cost) == (Path("/var/tmp/vk"), 1.0)
    explicit = _resolve(env, config, cache_dir=tmp_path / "mine", max_cost=0.5)
    assert (explicit.cache_dir, explicit.max_cost) == (tmp_path / "mine", 0.5)
    unset = _resolve({})
    assert (unset.cache_dir, unset.max_cost) == (None, None)
    with pytest.raises(ConfigError, match="max cost"):
        _resolve({}, max_cost=0)


def test_a_url_not_on_runpod_is_self_hosted_and_free_unless_priced() -> None:
    assert is_self_hosted("http://127.0.0.1:9/v2/edit")
    assert is_self_hosted("http://api.runpod.ai/v2/abc")  # not over https: not RunPod's
    assert not is_self_hosted("https://api.runpod.ai/v2/abc")
    assert not is_self_hosted("abc123")  # an id is RunPod's, whatever the base URL
    env = {
        "VIDEOKIT_EDIT_ENDPOINT": "http://127.0.0.1:9/v2/edit",
        "VIDEOKIT_ANIMATE_ENDPOINT": "anim456,http://box:8002/v2/animate",
        "VIDEOKIT_RUNPOD_BASE_URL": "http://127.0.0.1:9/v2",
    }
    costs = _resolve(env).cost_model()
    assert costs.billing("edit") == "self-hosted" and costs.rate("edit") == 0
    assert costs.billing("animate") == "gpu" and costs.rate("animate") > 0
    assert costs.cost("edit", 100) == 0 and costs.price_per_second("edit") > 0
    # Each endpoint of a route bills its own way.
    fallback = costs.for_endpoint("animate", "ADA_80_PRO", None, endpoint="http://box:8002/v2/a")
    assert fallback.billing("animate") == "self-hosted"
    assert fallback.for_endpoint("animate", "ADA_80_PRO", None, endpoint="x").rate("animate") > 0
    assert costs.billing("animate", "wan-2-2-i2v-720") == "per-output"
    priced = _resolve({**env, "VIDEOKIT_EDIT_SELF_HOSTED_PRICE": "0.001"}).cost_model()
    assert priced.cost("edit", 100) == pytest.approx(0.1)
    # A GPU pool you gave a self-hosted endpoint is what it bills at (its run time only)...
    pooled = _resolve({**env, "VIDEOKIT_EDIT_GPU": "AMPERE_80"}).cost_model()
    assert pooled.rate("edit") == pooled.price_per_second("edit") > 0
    assert pooled.billing("edit") == "self-hosted"
    assert pooled.endpoint_facts("edit").start_s == 0
    # ...unless you gave it a price too.
    both = {**env, "VIDEOKIT_EDIT_GPU": "AMPERE_80", "VIDEOKIT_EDIT_SELF_HOSTED_PRICE": "0"}
    assert _resolve(both).cost_model().rate("edit") == 0


# -- the range ------------------------------------------------------------------------------------


def _jobs() -> list[StageJob]:
    edit = EditRequest(images=[IMAGE], prompt="at night", width=1024, height=1024, seed=1)
    animate = AnimateRequest(image=IMAGE, prompt="drift", frames=49, fps=16, seed=1)
    return [
        StageJob("edit:a", "edit", edit),
        StageJob("animate:a", "animate", animate, after=("edit:a",)),
        StageJob("animate:b", "animate", animate),
    ]


def test_the_range_runs_from_warm_workers_to_cold_starts() -> None:
    costs = CostModel(
        prices={"ADA_80_PRO": 0.001},
        idle_timeout_s={"edit": 60.0, "animate": 60.0},
        start_s={"edit": 30.0, "animate": 90.0},
    )
    jobs = _jobs()
    execution = sum(costs.estimate_seconds(job.request) for job in jobs)
    span = costs.estimate_range(jobs, concurrency={"edit": 1, "animate": 2})
    # Warm: no start; one edit worker and two animate workers, each idles 60 s after its last.
    warm = span.warm["edit"] + span.warm["animate"]
    assert warm.start_s == 0 and warm.execution_s == pytest.approx(execution)
    assert warm.idle_s == pytest.approx(3 * 60)
    assert span.warm_usd == pytest.approx((execution + 180) * 0.001)
    # Cold: the same workers each start once (30 + 2 x 90 s).
    cold = span.cold["edit"] + span.cold["animate"]
    assert (cold.start_s, cold.workers_started) == (210, 3)
    assert span.cold_usd == pytest.approx((execution + 180 + 210) * 0.001)
    # One animate worker at a time: the second job waits for the first; one start, one idle.
    queued = costs.estimate_range(jobs, concurrency={"edit": 1, "animate": 1})
    assert queued.cold["animate"].workers_started == 1
    assert queued.cold["animate"].idle_s == pytest.approx(60)


def test_per_output_and_self_hosted_stages_bill_no_start_and_no_idle() -> None:
    costs = CostModel(
        output_prices={"animate": OutputPrice(0.06, "second")},
        self_hosted=frozenset({"edit"}),
        start_s={"edit": 30.0, "animate": 90.0},
    )
    span = costs.estimate_range(_jobs(), concurrency={"edit": 2, "animate": 2})
    assert span.billing == {"edit": "self-hosted", "animate": "per-output"}
    assert span.warm_usd == span.cold_usd == pytest.approx(2 * 0.06 * 48 / 16)
    assert span.per_output_usd == {"animate": pytest.approx(0.36)}
    assert "animate" not in span.cold and span.cold["edit"].start_s == 0
    priced = CostModel(
        self_hosted=frozenset({"edit", "animate"}),
        self_hosted_price={"edit": 0.01, "animate": 0.01},
    )
    span = priced.estimate_range(_jobs())
    execution = sum(priced.estimate_seconds(job.request) for job in _jobs())
    assert span.warm_usd == span.cold_usd == pytest.approx(execution * 0.01)


# -- plan -----------------------------------------------------------------------------------------

STORY = (
    "title: Plan\nreference: ref.png\nscenes:\n"
    "  - {id: one, edit: at night, motion: drift}\n"
    "  - {id: two, from: reference, motion: more}\n"
)


def _story(tmp_path: Path) -> Path:
    if not (tmp_path / "story.yaml").exists():
        make_image(tmp_path / "ref.png")
        (tmp_path / "story.yaml").write_text(STORY)
    return tmp_path / "story.yaml"


def _shown(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> tuple[str, dict[str, Any]]:
    """What ``plan`` prints, and its JSON, in this process (no request: no catalog, no health)."""
    from videokit.backends import create_backend
    from videokit.cli.endpoint_notes import route_endpoints
    from videokit.cli.plan_view import plan_json, print_plan
    from videokit.pipeline.forecast import forecast
    from videokit.story.loader import load_story
    from videokit.story.plan import plan_story

    settings = _resolve({"RUNPOD_API_KEY": "k", **env})
    backend: Any = create_backend(None, settings)
    costs = settings.cost_model()
    plan = plan_story(load_story(_story(tmp_path)))
    workdir = tmp_path / "out"
    guess = forecast(plan, backend, workdir, costs=costs, routes=route_endpoints(backend, costs))
    capsys.readouterr()
    print_plan(plan, guess, "runpod", workdir, costs)
    text = capsys.readouterr().out
    return text, json.loads(json.dumps(plan_json(plan, guess, "runpod", workdir, costs)))


def test_plan_shows_the_range_what_it_includes_and_each_stages_facts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {
        "VIDEOKIT_EDIT_ENDPOINT": "edit123",
        "VIDEOKIT_ANIMATE_ENDPOINT": "anim456",
        "VIDEOKIT_ANIMATE_IDLE_TIMEOUT": "60",
    }
    text, body = _shown(tmp_path, env, capsys)
    low, high = body["cost_range_usd"]
    assert body["cost_usd"] < low < high  # the jobs alone, then with idle time, then starts
    includes = body["cost_includes"]
    animate = includes["stages"]["animate"]
    assert animate["billing"] == "gpu" and animate["idle_timeout_s"] == 60
    assert animate["start_s"] == DEFAULT_START_S["animate"]
    assert animate["sources"] == {
        "idle_timeout": "VIDEOKIT_ANIMATE_IDLE_TIMEOUT",
        "start": "assumed",
    }
    assert animate["cold"]["workers_started"] == 2 and animate["warm"]["start_s"] == 0
    assert includes["stages"]["edit"]["sources"]["idle_timeout"] == "RunPod's default"
    assert "network volume" in " ".join(includes["not_included"])
    assert low == pytest.approx(
        sum(s["warm"]["usd"] for s in includes["stages"].values()), abs=1e-3
    )

    assert f"~${low:.2f} (warm workers) … ~${high:.2f} (cold starts) on RunPod" in text
    assert "includes execution (~" in text and "not included: network volume" in text
    assert "start time of 3 worker(s) (edit 1 at 60 s, animate 2 at 90 s)" in text
    assert "idle timeout 60 s (VIDEOKIT_ANIMATE_IDLE_TIMEOUT), start 90 s (assumed)" in text
    assert "  edit: on ADA_80_PRO, $0.00116/s (built-in table of" in text


def test_plan_shows_a_self_hosted_stage_as_free(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {
        "VIDEOKIT_EDIT_ENDPOINT": "http://127.0.0.1:9/v2/edit",
        "VIDEOKIT_ANIMATE_ENDPOINT": "anim456",
    }
    text, body = _shown(tmp_path, env, capsys)
    assert "  edit: self-hosted, free" in text
    assert "edit self-hosted: run time only" in text
    assert body["scenes"]["one"]["cost_usd"] > 0  # its animate job; the edit is free
    assert body["cost_includes"]["stages"]["edit"]["billing"] == "self-hosted"
    assert body["gpu_prices"]["edit"]["source"] == "self-hosted"

    priced = {**env, "VIDEOKIT_EDIT_SELF_HOSTED_PRICE": "0.0005"}
    text, _ = _shown(tmp_path, priced, capsys)
    assert "  edit: self-hosted, $0.0005/s (set in VIDEOKIT_EDIT_SELF_HOSTED_PRICE)" in text

    everything = {**env, "VIDEOKIT_ANIMATE_ENDPOINT": "http://127.0.0.1:9/v2/animate"}
    text, body = _shown(tmp_path, everything, capsys)
    assert body["cost_range_usd"] == [0, 0] and "estimate: ~" in text
    assert "(self-hosted)" in text and "warm workers" not in text


def test_plan_json_of_the_command_has_the_range(tmp_path: Path) -> None:
    _story(tmp_path)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VIDEOKIT_", "RUNPOD_"))}
    done = subprocess.run(
        [sys.executable, "-m", "videokit", "plan", "story.yaml", "--out", "out", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**clean, "VIDEOKIT_CACHE_DIR": str(tmp_path / "cache")},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    low, high = body["cost_range_usd"]
    assert body["cost_usd"] < low < high and body["cost_includes"]["summary"]
