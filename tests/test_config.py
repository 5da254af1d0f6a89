"""Settings: one resolution order (argument > environment > .env > videokit.toml > story >
defaults), every value checked with an error that names its variable or key, and the cost model
that both ``plan`` and ``render`` use. Tests pass ``env=``/``dotenv=``/``config_file=``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import make_image
from videokit.backends import create_backend
from videokit.backends.runpod import RunPodBackend
from videokit.config import Settings
from videokit.costs import GPU_PRICE_PER_SECOND
from videokit.errors import ConfigError
from videokit.story.loader import load_story


def toml(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


STORY = """\
title: Config
reference: ref.png
scenes:
  - {id: one, motion: drift}
endpoints: {edit: story-edit, animate: story-animate, base_url: "http://story/v2"}
"""


@pytest.fixture
def story(tmp_path: Path) -> Path:
    make_image(tmp_path / "ref.png")
    path = tmp_path / "story.yaml"
    path.write_text(STORY)
    return path


def test_precedence_argument_environment_dotenv_file_story(tmp_path: Path, story: Path) -> None:
    loaded = load_story(story)
    config = toml(
        tmp_path / "videokit.toml",
        """
        base_url = "http://file/v2"
        queue_timeout = 300
        [edit]
        endpoint = "file-edit"
        [animate]
        endpoint = "file-animate"
        """,
    )
    dotenv = tmp_path / ".env"
    dotenv.write_text("VIDEOKIT_ANIMATE_ENDPOINT=dotenv-animate\nVIDEOKIT_QUEUE_TIMEOUT=200\n")

    def resolve(env: dict[str, str], **explicit: object) -> Settings:
        return Settings.resolve(
            story=loaded,
            env=env,
            dotenv=dotenv,
            config_file=config,
            **explicit,  # type: ignore[arg-type]
        )

    settings = resolve({})
    # .env beats the file, the file beats the story.
    assert settings.animate_endpoint == "dotenv-animate" and settings.queue_timeout_s == 200
    assert settings.edit_endpoint == "file-edit" and settings.base_url == "http://file/v2"
    # The environment beats .env...
    settings = resolve(
        {"VIDEOKIT_ANIMATE_ENDPOINT": "env-animate", "VIDEOKIT_QUEUE_TIMEOUT": "100"}
    )
    assert settings.animate_endpoint == "env-animate" and settings.queue_timeout_s == 100
    # ...and an explicit argument beats everything.
    settings = resolve(
        {"VIDEOKIT_QUEUE_TIMEOUT": "100"}, animate_endpoint="arg", queue_timeout_s=50
    )
    assert settings.animate_endpoint == "arg" and settings.queue_timeout_s == 50
    # Without a file, the story's endpoints apply; without anything, the defaults.
    bare = Settings.resolve(story=loaded, env={}, dotenv=None, config_file=None)
    assert (bare.edit_endpoint, bare.base_url) == ("story-edit", "http://story/v2")
    assert bare.queue_timeout_s is None and bare.backend == "runpod"
    nothing = Settings.resolve(env={}, dotenv=None)
    assert nothing.edit_endpoint is None and nothing.backend is None


def test_deadlines_and_retries_from_the_environment_reach_the_backend() -> None:
    env = {
        "VIDEOKIT_ANIMATE_ENDPOINT": "http://127.0.0.1:9/v2/animate",
        "VIDEOKIT_QUEUE_TIMEOUT": "120",
        "VIDEOKIT_EXECUTION_TIMEOUT": "450.5",
        "VIDEOKIT_TTL": "7200",
        "VIDEOKIT_JOB_ATTEMPTS": "5",
        "VIDEOKIT_WARMUP": "off",
    }
    backend = create_backend(None, Settings.resolve(env=env, dotenv=None))
    assert isinstance(backend, RunPodBackend)
    config = backend.config
    assert (config.queue_timeout_s, config.execution_timeout_s, config.ttl_s) == (120, 450.5, 7200)
    assert config.job_attempts == 5 and config.warmup is False
    # Left unset, the backend's own defaults apply.
    default = create_backend(None, Settings.resolve(env={**env, "VIDEOKIT_TTL": ""}, dotenv=None))
    assert isinstance(default, RunPodBackend) and default.config.ttl_s == 3600


def test_the_config_file_sets_everything_but_secrets(tmp_path: Path) -> None:
    config = toml(
        tmp_path / "videokit.toml",
        """
        backend = "runpod"
        concurrency = 2
        execution_timeout = 1200
        ttl = 7200
        job_attempts = 4
        warmup = false
        [edit]
        endpoint = "http://box:8001/v2/edit"
        gpu = "AMPERE_80"
        [animate]
        endpoint = "http://box:8002/v2/animate"
        gpu = "MY_POOL"
        bill_delay = true
        mode = "standard"
        [prices]
        MY_POOL = 0.002
        """,
    )
    settings = Settings.resolve(env={}, dotenv=None, config_file=config)
    assert settings.config_file == config and settings.concurrency == 2
    backend = create_backend(None, settings)
    assert isinstance(backend, RunPodBackend)
    assert backend.config.execution_timeout_s == 1200 and backend.config.job_attempts == 4
    assert backend.config.endpoints["animate"].gpu == "MY_POOL"
    costs = backend.costs
    assert costs.price_per_second("animate") == 0.002
    assert costs.price_per_second("edit") == GPU_PRICE_PER_SECOND["AMPERE_80"]
    assert costs.cost("animate", 10.0, delay_s=5.0) == pytest.approx(15 * 0.002)
    assert costs.cost("edit", 10.0, delay_s=5.0) == pytest.approx(
        10 * GPU_PRICE_PER_SECOND["AMPERE_80"]
    )
    assert costs.modes == {"animate": "standard"}
    # VIDEOKIT_CONFIG points at it too.
    named = Settings.resolve(env={"VIDEOKIT_CONFIG": str(config)}, dotenv=None)
    assert named.gpu == {"edit": "AMPERE_80", "animate": "MY_POOL"}


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('api_key = "rpa_123"', "'api_key'"),
        ('[animate]\nendpoint = "x"\nrunpod_api_key = "rpa_123"', "'animate.runpod_api_key'"),
        ('s3_secret_access_key = "k"', "'s3_secret_access_key'"),
        ('serve_api_key = "k"', "'serve_api_key'"),
    ],
)
def test_a_secret_in_the_config_file_is_refused(tmp_path: Path, text: str, where: str) -> None:
    config = toml(tmp_path / "videokit.toml", text)
    with pytest.raises(ConfigError) as caught:
        Settings.resolve(env={}, dotenv=None, config_file=config)
    assert where in caught.value.message and "no secrets" in caught.value.message
    assert "RUNPOD_API_KEY" in (caught.value.hint or "") and ".env" in (caught.value.hint or "")
    assert "rpa_123" not in str(caught.value) and '"k"' not in str(caught.value)


def test_the_serve_key_comes_from_the_environment_or_dotenv_only(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("VIDEOKIT_SERVE_API_KEY=from-dotenv\n")
    from_dotenv = Settings.resolve(env={}, dotenv=dotenv)
    assert from_dotenv.serve_api_key is not None
    assert from_dotenv.serve_api_key.reveal() == "from-dotenv"
    assert "from-dotenv" not in repr(from_dotenv)
    env = {
        "VIDEOKIT_SERVE_API_KEY": "from-env",
        "VIDEOKIT_ANIMATE_ENDPOINT": "http://box:8001/v2/a",
    }
    resolved = Settings.resolve(env=env, dotenv=dotenv)
    assert resolved.serve_api_key is not None and resolved.serve_api_key.reveal() == "from-env"
    explicit = Settings.resolve(serve_api_key="arg", env=env, dotenv=dotenv)
    assert explicit.serve_api_key is not None and explicit.serve_api_key.reveal() == "arg"
    # ...and reaches the backend, apart from the RunPod key.
    backend = create_backend(None, resolved)
    assert isinstance(backend, RunPodBackend) and backend.config.api_key is None
    assert backend.config.serve_api_key is not None
    assert backend.config.serve_api_key.reveal() == "from-env"
    assert Settings.resolve(env={}, dotenv=None).serve_api_key is None


@pytest.mark.parametrize(
    ("endpoints", "needs_key"),
    [
        ({"VIDEOKIT_EDIT_ENDPOINT": "abc", "VIDEOKIT_ANIMATE_ENDPOINT": "def"}, "edit and animate"),
        ({"VIDEOKIT_ANIMATE_ENDPOINT": "https://api.runpod.ai/v2/def"}, "animate"),
        (
            {
                "VIDEOKIT_EDIT_ENDPOINT": "abc",
                "VIDEOKIT_ANIMATE_ENDPOINT": "http://gpu-box:8001/v2/animate",
            },
            "edit",
        ),
        ({"VIDEOKIT_ANIMATE_ENDPOINT": "http://gpu-box:8001/v2/animate"}, None),
        (
            {"VIDEOKIT_RUNPOD_BASE_URL": "http://gpu-box:8000/v2", "VIDEOKIT_EDIT_ENDPOINT": "e"},
            None,
        ),
    ],
    ids=["ids-on-runpod", "runpod-url", "mixed", "self-hosted-url", "self-hosted-base"],
)
def test_the_runpod_key_is_required_only_for_endpoints_on_runpod(
    endpoints: dict[str, str], needs_key: str | None
) -> None:
    settings = Settings.resolve(env=endpoints, dotenv=None)
    if needs_key is None:
        assert isinstance(create_backend(None, settings), RunPodBackend)
        return
    with pytest.raises(ConfigError, match="RUNPOD_API_KEY is not set") as caught:
        create_backend(None, settings)
    assert f"for the {needs_key} endpoint(s) on RunPod" in caught.value.message
    with_key = Settings.resolve(env={**endpoints, "RUNPOD_API_KEY": "k"}, dotenv=None)
    assert isinstance(create_backend(None, with_key), RunPodBackend)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("queue_timout = 60", "unknown setting 'queue_timout' (did you mean 'queue_timeout'?)"),
        ("queue_timeout = -5", "queue_timeout must be a positive number of seconds"),
        ('warmup = "no"', "warmup must be true or false"),
        ("job_attempts = 0", "job_attempts must be a whole number of at least 1"),
        ("[edit]\ngpuu = 'ADA_24'", "unknown setting 'edit.gpuu'"),
        ("[animate]\ngpu = 'H100'", "animate.gpu: unknown GPU pool 'H100'"),
        ("[prices]\nADA_24 = 'cheap'", "the price of 'ADA_24'"),
        ("ttl = ", "is not valid TOML"),
    ],
)
def test_config_file_errors_name_the_file_and_key(tmp_path: Path, text: str, fragment: str) -> None:
    config = toml(tmp_path / "videokit.toml", text)
    with pytest.raises(ConfigError) as caught:
        Settings.resolve(env={}, dotenv=None, config_file=config)
    assert fragment in caught.value.message and str(config) in caught.value.message


def test_a_missing_config_file_named_explicitly_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file") as caught:
        Settings.resolve(env={"VIDEOKIT_CONFIG": str(tmp_path / "nope.toml")}, dotenv=None)
    assert "VIDEOKIT_CONFIG" in (caught.value.hint or "")


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("VIDEOKIT_QUEUE_TIMEOUT", "ten minutes", "VIDEOKIT_QUEUE_TIMEOUT must be a positive"),
        ("VIDEOKIT_EXECUTION_TIMEOUT", "0", "VIDEOKIT_EXECUTION_TIMEOUT must be a positive"),
        ("VIDEOKIT_TTL", "inf", "VIDEOKIT_TTL must be a positive"),
        ("VIDEOKIT_JOB_ATTEMPTS", "2.5", "VIDEOKIT_JOB_ATTEMPTS must be a whole number"),
        ("VIDEOKIT_WARMUP", "maybe", "VIDEOKIT_WARMUP must be true or false"),
        ("VIDEOKIT_CONCURRENCY", "0", "VIDEOKIT_CONCURRENCY must be a whole number"),
        ("VIDEOKIT_EDIT_GPU", "A100", "VIDEOKIT_EDIT_GPU: unknown GPU pool 'A100'"),
        ("VIDEOKIT_ANIMATE_BILL_DELAY", "sometimes", "VIDEOKIT_ANIMATE_BILL_DELAY must be true"),
        ("VIDEOKIT_EDIT_MODE", "turbo", "VIDEOKIT_EDIT_MODE must be one of lightning, standard"),
        ("VIDEOKIT_GPU_PRICES", "{ADA_24: 1}", "VIDEOKIT_GPU_PRICES is not valid JSON"),
        ("VIDEOKIT_GPU_PRICES", '{"ADA_24": -1}', "the price of 'ADA_24'"),
    ],
)
def test_environment_values_are_checked_and_named(variable: str, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.resolve(env={variable: value}, dotenv=None)
    assert fragment in caught.value.message


def test_gpu_prices_merge_over_the_defaults_and_unknown_pools_list_the_known_ones() -> None:
    env = {
        "VIDEOKIT_GPU_PRICES": json.dumps({"ADA_80_PRO": 0.001, "B200_180": 0.003}),
        "VIDEOKIT_ANIMATE_GPU": "B200_180",
        "VIDEOKIT_ANIMATE_BILL_DELAY": "1",
    }
    costs = Settings.resolve(env=env, dotenv=None).cost_model()
    assert costs.price_per_second("animate") == 0.003
    assert costs.price_per_second("edit") == 0.001  # the default pool, at the merged price
    assert costs.prices["AMPERE_16"] == GPU_PRICE_PER_SECOND["AMPERE_16"]
    assert costs.bill_delay == {"animate": True}
    with pytest.raises(ConfigError) as caught:
        Settings.resolve(env={"VIDEOKIT_ANIMATE_GPU": "B200_180"}, dotenv=None)
    assert all(pool in caught.value.message for pool in GPU_PRICE_PER_SECOND)


def test_a_standard_mode_endpoint_is_estimated_with_the_reference_settings() -> None:
    from videokit.costs import STANDARD_ANIMATE_STEPS, STANDARD_EDIT_STEPS
    from videokit.protocol import AnimateRequest, EditRequest, MediaInput
    from videokit.worker import qwen, wan

    # The worker's own constants: what a standard-mode worker really substitutes.
    assert STANDARD_EDIT_STEPS == qwen.STANDARD_STEPS
    assert wan.MODELS["a14b"].standard_steps == STANDARD_ANIMATE_STEPS
    image = MediaInput(base64="iVBORw0KGgo=")
    animate = AnimateRequest(image=image, prompt="p", width=832, height=480, frames=81, seed=1)
    edit = EditRequest(images=[image], prompt="p", width=1024, height=1024, seed=1)
    lightning = Settings.resolve(env={}, dotenv=None).cost_model()
    standard = Settings.resolve(
        env={"VIDEOKIT_EDIT_MODE": "standard", "VIDEOKIT_ANIMATE_MODE": "Standard"}, dotenv=None
    ).cost_model()
    # Untouched Lightning defaults: 40 steps with CFG (two passes a step) instead of 4 or 8.
    assert standard.estimate_seconds(animate) / lightning.estimate_seconds(animate) > 10
    assert standard.estimate_seconds(edit) / lightning.estimate_seconds(edit) > 5
    # A request that chose its own steps runs as sent, in either mode.
    chosen = animate.model_copy(update={"steps": 6})
    assert standard.estimate_seconds(chosen) == lightning.estimate_seconds(chosen)


def videokit_cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VIDEOKIT_", "RUNPOD_"))}
    return subprocess.run(
        [sys.executable, "-m", "videokit", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**clean, **env},
        timeout=120,
    )


def test_plan_estimates_with_the_cost_model_render_bills_with(tmp_path: Path) -> None:
    make_image(tmp_path / "ref.png")
    (tmp_path / "story.yaml").write_text(
        "title: Plan\nreference: ref.png\nscenes:\n  - {id: one, edit: at night, motion: drift}\n"
    )
    toml(tmp_path / "videokit.toml", "[animate]\ngpu = 'HOPPER_141'\n[prices]\nHOPPER_141 = 1.0\n")
    env = {"VIDEOKIT_GPU_PRICES": json.dumps({"ADA_80_PRO": 2.0})}
    planned = videokit_cli("plan", "story.yaml", "--json", cwd=tmp_path, env=env)
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout.splitlines()[-1])
    scene = plan["scenes"]["one"]
    settings = Settings.resolve(env=env, dotenv=None, config_file=tmp_path / "videokit.toml")
    costs = settings.cost_model()
    assert (costs.pool("edit"), costs.pool("animate")) == ("ADA_80_PRO", "HOPPER_141")
    # Edit seconds at $2/s plus animate seconds at $1/s (from the file): not the built-in table.
    assert scene["cost_usd"] > scene["gpu_seconds"] * 1.0
    assert scene["cost_usd"] < scene["gpu_seconds"] * 2.0
    assert plan["cost_usd"] == pytest.approx(plan["all_jobs_cost_usd"], rel=1e-3)
    assert plan["cost_usd"] > 10 * scene["gpu_seconds"] * GPU_PRICE_PER_SECOND["HOPPER_141"]

    wrong = videokit_cli("plan", "story.yaml", cwd=tmp_path, env={"VIDEOKIT_EDIT_GPU": "RTX_9090"})
    assert wrong.returncode == 2
    assert "VIDEOKIT_EDIT_GPU" in wrong.stderr and "unknown GPU pool" in wrong.stderr
    assert "Traceback" not in wrong.stderr
