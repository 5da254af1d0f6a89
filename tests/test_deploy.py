"""``videokit deploy``: the spec, and whole deploys against a loopback emulator of RunPod's REST v2.

The emulator (``tests/rest_emulator.py``) is real HTTP on 127.0.0.1; it validates every request
body against the models written from RunPod's OpenAPI document, and a body that does not validate
fails the test (``emulator.invalid`` must stay empty).
"""

from __future__ import annotations

import io
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.rest_emulator import RestEmulator, rest_emulator
from videokit.costs import GPU_PRICE_PER_SECOND
from videokit.deploy import (
    GPU_POOLS,
    MODEL_REPOS,
    MODEL_VRAM_GB,
    DeployError,
    load_spec,
    model_reference,
    run_deploy,
)
from videokit.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "deploy.yaml"
API_KEY = "rp_TESTKEY_do_not_print_0123456789"


@pytest.fixture
def runpod() -> Iterator[RestEmulator]:
    with rest_emulator(API_KEY) as emulator:
        yield emulator
    assert emulator.invalid == [], "a request body did not validate against the v2 models"


class NoNetwork(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"the API must not be called ({request.method} {request.url.path})")


def write_spec(tmp_path: Path, text: str, name: str = "deploy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


SPEC = """
name_prefix: vk-test
workers:
  edit:
    image: ghcr.io/acme/videokit-edit:0.1.0
    gpus: [ADA_80_PRO, AMPERE_80]
    workers_max: 2
    idle_timeout: 30
    execution_timeout: 300
    network_volume_id: vol123
    allowed_cuda_versions: ["13.0"]
    env:
      VIDEOKIT_QWEN_MODEL: "2509"
      TRICKY: {tricky}
      S3_SECRET_ACCESS_KEY: the-real-secret-value
      BUCKET_KEY_REF: "{{{{ RUNPOD_SECRET_bucket }}}}"
  animate:
    image: ghcr.io/acme/videokit-animate@sha256:{digest}
    gpus: [HOPPER_141]
    flashboot: false
    workers_max: 3
    env:
      VIDEOKIT_WAN_MODEL: a14b
"""
TRICKY_VALUE = 'a "quoted" \\ back\nslash $HOME {x} 中文 🎬'


def spec_text() -> str:
    return SPEC.format(tricky=json.dumps(TRICKY_VALUE, ensure_ascii=False), digest="a" * 64)


def deploy(path: Path, **kwargs: Any) -> tuple[Any, str]:
    out = io.StringIO()
    result = run_deploy(path, out=out, **kwargs)
    return result, out.getvalue()


# -- dry run ----------------------------------------------------------------------------------------


def request_bodies(text: str) -> list[tuple[str, dict[str, Any]]]:
    """The ``METHOD /path`` lines of deploy's output and the JSON body printed under each."""
    found: list[tuple[str, dict[str, Any]]] = []
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith(("    POST /", "    PATCH /")):
            body: list[str] = []
            for following in lines[index + 1 :]:
                if not following.startswith("      "):
                    break
                body.append(following)
            found.append((line.strip(), json.loads("\n".join(body))))
    return found


def test_offline_dry_run_of_the_example_prints_every_v2_request_and_sends_nothing() -> None:
    result, text = deploy(
        EXAMPLE, dry_run=True, api_key=API_KEY, offline=True, transport=NoNetwork()
    )
    assert set(result.workers) == {"edit", "animate"}
    assert API_KEY not in text and "were not looked up" in text
    for stage in ("edit", "animate"):
        worker = result.workers[stage]
        assert (worker.template_action, worker.endpoint_action) == ("create or update",) * 2
        assert worker.endpoint_id is None
    requests = request_bodies(text)
    assert [r for r, _ in requests] == ["POST /v2/templates", "POST /v2/serverless"] * 2
    template, endpoint = requests[0][1], requests[1][1]
    assert template == {
        "name": "videokit-edit",
        "image": "ghcr.io/your-org/videokit-edit:0.1.0-loras",
        "disk": 20,
        "env": {"VIDEOKIT_QWEN_MODEL": "2509", "VIDEOKIT_QWEN_MODE": "lightning"},
        "serverless": True,
        "startSsh": False,
        "startJupyter": False,
        "allowedCudaVersions": ["12.6", "12.7", "12.8", "12.9", "13.0"],
    }
    assert endpoint == {
        "name": "videokit-edit",
        "type": "QUEUE",
        "templateId": "<id of template videokit-edit>",
        "gpu": {
            "pools": ["ADA_80_PRO", "AMPERE_80"],
            "count": 1,
            "allowedCudaVersions": ["12.6", "12.7", "12.8", "12.9", "13.0"],
        },
        "workers": {"min": 0, "max": 2, "idleTimeout": 60},
        "scaling": {"type": "QUEUE_DELAY", "queueDelay": 4.0},
        "timeout": 300000,
        "flashboot": "FLASHBOOT",
    }  # the cached model is in no v2 body: RunPod's OpenAPI document has no field for it
    # It is attached with RunPod's CLI, whose reference form deploy prints, pinned as the image.
    for stage, repo, commit in (
        ("edit", "Qwen/Qwen-Image-Edit-2509", "d3968ef930e841f4c73640fb8afa3b306a78167e"),
        ("animate", "Wan-AI/Wan2.2-I2V-A14B-Diffusers", "596658fd9ca6b7b71d5057529bbf319ecbc61d74"),
    ):
        reference = f"https://huggingface.co/{repo}:{commit}"
        assert result.workers[stage].cached_model == reference
        assert result.workers[stage].cached_model_state == "unknown"  # not looked up
        assert (
            f"runpodctl serverless update <id of endpoint videokit-{stage}> --model-reference"
            f" {reference}"
        ) in text
    assert result.env_lines == [
        "VIDEOKIT_EDIT_ENDPOINT=<id of endpoint videokit-edit>",
        "VIDEOKIT_EDIT_GPU=ADA_80_PRO",
        "VIDEOKIT_ANIMATE_ENDPOINT=<id of endpoint videokit-animate>",
        "VIDEOKIT_ANIMATE_GPU=ADA_80_PRO",
    ]
    assert text.rstrip().endswith("\n".join(result.env_lines))


def test_dry_run_masks_secret_values_but_shows_runpod_secret_references(tmp_path: Path) -> None:
    _, text = deploy(write_spec(tmp_path, spec_text()), dry_run=True, api_key=None)
    assert "the-real-secret-value" not in text
    env = request_bodies(text)[0][1]["env"]
    assert env["S3_SECRET_ACCESS_KEY"] == "******** (secret, not shown)"
    assert env["BUCKET_KEY_REF"] == "{{ RUNPOD_SECRET_bucket }}"
    assert env["TRICKY"] == TRICKY_VALUE


def test_deploying_needs_a_key() -> None:
    with pytest.raises(ConfigError, match="RUNPOD_API_KEY is not set"):
        deploy(EXAMPLE, dry_run=False, api_key="  ", transport=NoNetwork())


def test_a_field_the_v2_api_requires_is_refused_before_any_request(tmp_path: Path) -> None:
    for missing in ("image", "gpus"):
        lines = [line for line in WORKER.splitlines() if not line.startswith(f"    {missing}:")]
        path = write_spec(tmp_path, "\n".join(lines) + "\n")
        with pytest.raises(ConfigError) as caught:
            deploy(path, dry_run=False, api_key=API_KEY, transport=NoNetwork())
        assert f"workers.edit.{missing}: missing: RunPod's REST API v2 requires it" in str(
            caught.value
        )


# -- against the REST v2 emulator -------------------------------------------------------------------


def live(runpod: RestEmulator, path: Path, **kwargs: Any) -> tuple[Any, str]:
    kwargs.setdefault("dry_run", False)
    kwargs.setdefault("api_key", API_KEY)
    return deploy(path, base_url=runpod.base_url, allow_key_to_any_host=True, **kwargs)


def writes(runpod: RestEmulator) -> list[tuple[str, str, dict[str, Any] | None]]:
    return [(r.method, r.path, r.body) for r in runpod.writes()]


def test_first_deploy_creates_then_a_second_changes_nothing_then_an_edit_patches_only_it(
    runpod: RestEmulator, tmp_path: Path
) -> None:
    path = write_spec(tmp_path, spec_text())
    result, text = live(runpod, path)

    assert [(m, p) for m, p, _ in writes(runpod)] == [
        ("POST", "/v2/templates"), ("POST", "/v2/serverless"),
    ] * 2  # fmt: skip
    edit = result.workers["edit"]
    assert (edit.template_action, edit.endpoint_action) == ("create", "create")
    template = runpod.templates[edit.template_id]
    assert template["env"]["TRICKY"] == TRICKY_VALUE
    assert template["env"]["BUCKET_KEY_REF"] == "{{ RUNPOD_SECRET_bucket }}"
    assert template["serverless"] is True and template["startJupyter"] is False
    endpoint = runpod.endpoints[edit.endpoint_id]
    assert endpoint["image"] == "ghcr.io/acme/videokit-edit:0.1.0"  # copied from the template
    assert endpoint["env"] == template["env"]
    assert endpoint["gpu"]["pools"] == ["ADA_80_PRO", "AMPERE_80"]
    assert endpoint["gpu"]["allowedCudaVersions"] == ["13.0"]
    assert endpoint["timeout"] == 300_000 and endpoint["flashboot"] == "FLASHBOOT"
    assert endpoint["networkVolumes"] == ["vol123"]
    assert endpoint["workers"] == {"min": 0, "max": 2, "idleTimeout": 30}
    animate = runpod.endpoints[result.workers["animate"].endpoint_id]
    assert animate["flashboot"] == "OFF" and animate["networkVolumes"] == []
    assert f"VIDEOKIT_EDIT_ENDPOINT={edit.endpoint_id}" in text.splitlines()
    assert "VIDEOKIT_EDIT_GPU=ADA_80_PRO" in text.splitlines()
    assert "VIDEOKIT_ANIMATE_GPU=HOPPER_141" in text.splitlines()
    assert API_KEY not in text and "the-real-secret-value" not in text
    assert all(r.authorization == f"Bearer {API_KEY}" for r in runpod.requests)

    # Again: found by name, nothing to change, only GETs.
    runpod.requests.clear()
    again, text = live(runpod, path)
    assert writes(runpod) == []
    assert [(r.method, r.path) for r in runpod.requests] == [
        ("GET", "/v2/templates"), ("GET", "/v2/serverless"),
    ]  # fmt: skip
    assert again.workers["edit"].endpoint_id == edit.endpoint_id
    assert again.workers["edit"].endpoint_action == "unchanged"
    assert f"VIDEOKIT_EDIT_ENDPOINT={edit.endpoint_id}" in text

    # One changed field (workers_max): one PATCH of the endpoint with just that.
    runpod.requests.clear()
    more = write_spec(tmp_path, spec_text().replace("workers_max: 2", "workers_max: 4"))
    third, text = live(runpod, more)
    assert writes(runpod) == [
        ("PATCH", f"/v2/serverless/{edit.endpoint_id}",
         {"workers": {"min": 0, "max": 4, "idleTimeout": 30}}),
    ]  # fmt: skip
    assert third.workers["edit"].template_action == "unchanged"
    assert runpod.endpoints[edit.endpoint_id]["workers"]["max"] == 4
    assert 'was workers: {"min": 0, "max": 2, "idleTimeout": 30}' in text

    # A new image tag: the template and the endpoint's copy, each PATCHed with the image only.
    runpod.requests.clear()
    image = "ghcr.io/acme/videokit-edit:0.2.0"
    tagged = write_spec(
        tmp_path,
        spec_text()
        .replace("workers_max: 2", "workers_max: 4")
        .replace("videokit-edit:0.1.0", "videokit-edit:0.2.0"),
    )
    live(runpod, tagged)
    assert writes(runpod) == [
        ("PATCH", f"/v2/templates/{edit.template_id}", {"image": image}),
        ("PATCH", f"/v2/serverless/{edit.endpoint_id}", {"image": image}),
    ]
    assert runpod.endpoints[edit.endpoint_id]["image"] == image
    assert len(runpod.templates) == 2 and len(runpod.endpoints) == 2


def test_dry_run_with_a_key_only_reads_and_prints_the_patch_it_would_send(
    runpod: RestEmulator, tmp_path: Path
) -> None:
    path = write_spec(tmp_path, spec_text())
    live(runpod, path)
    runpod.requests.clear()
    template_id = next(iter(runpod.templates))
    runpod.templates[template_id]["env"]["OLD"] = "x"
    result, text = live(runpod, path, dry_run=True)
    assert {r.method for r in runpod.requests} == {"GET"}
    assert "(existing templates and endpoints were looked up, read-only" in text
    assert result.workers["edit"].template_action == "update"
    assert result.workers["edit"].endpoint_action == "unchanged"
    assert result.workers["animate"].template_action == "unchanged"
    assert f"    PATCH /v2/templates/{template_id}" in text
    assert "    env OLD: removed" in text
    patch = request_bodies(text)[0][1]
    assert set(patch) == {"env"} and "OLD" not in patch["env"]
    assert patch["env"]["S3_SECRET_ACCESS_KEY"] == "******** (secret, not shown)"


def test_existing_template_made_by_hand_is_adopted_not_duplicated(
    runpod: RestEmulator, tmp_path: Path
) -> None:
    made = runpod.add_template(name="vk-test-edit", image="old:1", serverless=True)
    result, _ = live(runpod, write_spec(tmp_path, spec_text()))
    assert result.workers["edit"].template_action == "update"
    assert len(runpod.templates) == 2
    adopted = runpod.templates[made["id"]]
    assert adopted["image"] == "ghcr.io/acme/videokit-edit:0.1.0"
    assert adopted["startSsh"] is False and adopted["startJupyter"] is False
    endpoint = runpod.endpoints[result.workers["edit"].endpoint_id]
    assert endpoint["image"] == "ghcr.io/acme/videokit-edit:0.1.0"


def test_a_deploy_that_failed_halfway_is_finished_by_running_it_again(
    runpod: RestEmulator, tmp_path: Path
) -> None:
    path = write_spec(tmp_path, spec_text())
    runpod.fail("POST", "/v2/serverless", 400, "no longer any instances available")
    with pytest.raises(DeployError, match="no longer any instances available"):
        live(runpod, path)
    assert len(runpod.templates) == 1 and not runpod.endpoints
    result, _ = live(runpod, path)
    assert result.workers["edit"].template_action == "unchanged"
    assert result.workers["edit"].endpoint_action == "create"
    assert len(runpod.templates) == 2 and len(runpod.endpoints) == 2


def test_duplicate_names_are_an_error_not_a_guess(runpod: RestEmulator, tmp_path: Path) -> None:
    path = write_spec(tmp_path, spec_text())
    live(runpod, path)
    first = next(iter(runpod.endpoints.values()))
    runpod.endpoints["ep9999"] = {**first, "id": "ep9999", "name": "vk-test-edit -fb"}
    with pytest.raises(DeployError, match="2 endpoints are named 'vk-test-edit'"):
        live(runpod, path)


def test_a_pod_template_with_the_name_is_not_taken_over(
    runpod: RestEmulator, tmp_path: Path
) -> None:
    runpod.add_template(name="vk-test-edit", image="pod:1", serverless=False)
    with pytest.raises(DeployError, match="pod \\(not serverless\\) template"):
        live(runpod, write_spec(tmp_path, spec_text()))
    assert runpod.writes() == []


def test_a_wrong_key_is_reported_without_echoing_it(runpod: RestEmulator, tmp_path: Path) -> None:
    with pytest.raises(DeployError) as caught:
        live(runpod, write_spec(tmp_path, spec_text()), api_key="rp_WRONG_KEY_123456")
    assert "401" in str(caught.value) and "RUNPOD_API_KEY" in str(caught.value)
    assert "rp_WRONG_KEY_123456" not in str(caught.value)


def test_the_key_is_not_sent_to_another_host_unless_allowed(
    runpod: RestEmulator, tmp_path: Path
) -> None:
    path = write_spec(tmp_path, spec_text())
    with pytest.raises(DeployError, match="401"):
        deploy(path, dry_run=False, api_key=API_KEY, base_url=runpod.base_url)
    assert {r.authorization for r in runpod.requests} == {None}


def test_api_errors_are_reported_without_secrets(runpod: RestEmulator, tmp_path: Path) -> None:
    runpod.fail("POST", "/v2/templates", 422, f"value the-real-secret-value rejected {API_KEY}")
    with pytest.raises(DeployError) as caught:
        live(runpod, write_spec(tmp_path, spec_text()))
    message = str(caught.value)
    assert "POST /v2/templates: RunPod refused the request (422)" in message
    assert "the-real-secret-value" not in message and API_KEY not in message


def test_unreachable_api_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="cannot reach RunPod's REST API"):
        deploy(
            write_spec(tmp_path, spec_text()),
            dry_run=True,
            api_key=API_KEY,
            base_url="http://127.0.0.1:9/v2",
            read_deadline_s=0.5,
        )


# -- spec validation --------------------------------------------------------------------------------


def spec_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_spec(write_spec(tmp_path, text))
    return str(caught.value)


WORKER = """
name_prefix: vk
workers:
  edit:
    image: ghcr.io/acme/videokit-edit:0.1.0
    gpus: [ADA_80_PRO]
"""


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            "    gpus: [A100_80]\n",
            "workers.edit.gpus: unknown GPU pool 'A100_80': did you mean 'AMPERE_80'?",
        ),
        ("    gpus: [h100]\n", "unknown GPU pool 'h100': did you mean 'ADA_80_PRO'?"),
        ("    gpus: [ADA_80]\n", "unknown GPU pool 'ADA_80': did you mean 'ADA_80_PRO'?"),
        ("    gpus: []\n", "workers.edit.gpus: List should have at least 1 item"),
        ("    gpus: [ADA_80_PRO, ADA_80_PRO]\n", "a GPU pool is listed twice"),
        (
            "    workers_mx: 3\n",
            "workers.edit.workers_mx: unknown field (did you mean 'workers_max'?)",
        ),
        (
            "    workers_min: 3\n    workers_max: 1\n",
            "workers_min (3) is larger than workers_max (1)",
        ),
        ("    image: ghcr.io/acme/videokit-edit\n", "has no tag"),
        ("    image: ghcr.io/acme/videokit-edit:latest\n", "'latest' is not a pin"),
        ("    image: 'ghcr.io/acme/x:1 && rm'\n", "is not an image reference"),
        (
            "    idle_timeout: 0\n",
            "workers.edit.idle_timeout: Input should be greater than or equal to 1",
        ),
        ("    network_volume_id: 'vol\"x'\n", "is not a RunPod id"),
        ("    allowed_cuda_versions: [cuda13]\n", "is not a CUDA version"),
        ("    env: {ENABLED: yes}\n", "ENABLED: give the value as a string"),
        ("    env: {RUNPOD_API_KEY: abc}\n", "RUNPOD_API_KEY must not go into a template"),
        ("    env: {'BAD-NAME': x}\n", "is not an environment variable name"),
        (
            "    scaler_type: FAST\n",
            "workers.edit.scaler_type: Input should be 'QUEUE_DELAY' or 'REQUEST_COUNT'",
        ),
        (
            "    weights: nfs\n",
            "workers.edit.weights: Input should be 'baked', 'volume' or 'cached'",
        ),
        ("    weights: volume\n", "workers.edit: weights: volume needs network_volume_id"),
        ("    weights: cached\n", "workers.edit: weights: cached needs cached_model"),
        (
            "    weights: baked\n    cached_model: Qwen/Qwen-Image-Edit-2509\n",
            "cached_model is only used with weights: cached (this worker has weights: baked)",
        ),
        (
            "    cached_model: https://huggingface.co/Qwen/Qwen-Image-Edit-2509:main\n",
            "workers.edit.cached_model: give the Hugging Face repository id, not a URL:"
            " cached_model: Qwen/Qwen-Image-Edit-2509",
        ),
        (
            "    cached_model: Qwen/Qwen-Image-Edit-2509:main\n",
            "put the revision in cached_model_revision",
        ),
        ("    cached_model: Qwen-Image-Edit-2509\n", "is not a Hugging Face repository id"),
        ("    cached_model: Qwen/../etc\n", "is not a Hugging Face repository id"),
        (
            "    cached_model: Qwen/Qwen-Image-Edit-2509\n    cached_model_revision: ../x\n",
            "workers.edit.cached_model_revision: '../x' is not a revision",
        ),
        (
            "    cached_model_revision: main\n",
            "cached_model_revision without cached_model",
        ),
        (
            "    cached_model: Wan-AI/Wan2.2-I2V-A14B-Diffusers\n",
            "workers.edit.cached_model: 'Wan-AI/Wan2.2-I2V-A14B-Diffusers' is not the snapshot"
            " of model 2509 (VIDEOKIT_QWEN_MODEL): the worker loads Qwen/Qwen-Image-Edit-2509;"
            " cache that one, or set VIDEOKIT_QWEN_MODEL",
        ),
        (
            "    cached_model: qwen/qwen-image-edit-2509\n",
            "the worker loads Qwen/Qwen-Image-Edit-2509; spell it exactly",
        ),
        ("    cached_modle: x/y\n", "unknown field (did you mean 'cached_model'?)"),
    ],
)
def test_worker_spec_errors_name_the_field_and_the_fix(
    tmp_path: Path, change: str, expected: str
) -> None:
    key = change.split(":", 1)[0]
    lines = [line for line in WORKER.splitlines() if not line.startswith(key)]
    assert expected in spec_error(tmp_path, "\n".join(lines) + "\n" + change)


def test_top_level_spec_errors(tmp_path: Path) -> None:
    assert "workers.edt: unknown worker (the workers are: edit, animate)" in spec_error(
        tmp_path, WORKER.replace("  edit:", "  edt:")
    )
    assert "name_prefix: 'VK_Test': use 1-40 lowercase" in spec_error(
        tmp_path, WORKER.replace("name_prefix: vk", "name_prefix: VK_Test")
    )
    assert "workers: Field required" in spec_error(tmp_path, "name_prefix: vk\n")
    assert "workers: Dictionary should have at least 1 item" in spec_error(
        tmp_path, "name_prefix: vk\nworkers: {}\n"
    )
    several = spec_error(tmp_path, WORKER + "    gpu_count: 0\n    region: us\nextra: 1\n")
    assert "invalid deploy spec (3 problems)" in several
    assert "deploy.yaml:2: invalid YAML: found character" in spec_error(
        tmp_path, "name_prefix: vk\n\tworkers: x\n"
    )
    assert "a deploy spec is a mapping" in spec_error(tmp_path, "- just a list\n")
    with pytest.raises(ConfigError, match="no such deploy spec"):
        load_spec(tmp_path / "missing.yaml")


def test_env_numbers_become_strings(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, WORKER + "    env: {STEPS: 8, SCALE: 1.5}\n"))
    assert spec.workers["edit"].env == {"STEPS": "8", "SCALE": "1.5"}


def test_the_example_is_valid_and_warns_about_nothing_surprising() -> None:
    spec = load_spec(EXAMPLE)
    assert set(spec.workers) == {"edit", "animate"}
    _, text = deploy(EXAMPLE, dry_run=True, api_key=None)
    assert "warning" not in text


def test_small_gpus_and_missing_volumes_are_warned_about(tmp_path: Path) -> None:
    path = write_spec(tmp_path, WORKER.replace("[ADA_80_PRO]", "[AMPERE_48, ADA_80_PRO]"))
    _, text = deploy(path, dry_run=True, api_key=None)
    assert "warning: AMPERE_48 has less than the ~62 GB model 2509 needs" in text
    assert "warning: no network_volume_id: the image must have the weights baked in" in text
    # Said explicitly, it is no surprise.
    _, text = deploy(
        write_spec(tmp_path, WORKER + "    weights: baked\n"), dry_run=True, api_key=None
    )
    assert "no network_volume_id" not in text
    offloaded = write_spec(
        tmp_path,
        WORKER.replace("[ADA_80_PRO]", "[AMPERE_48]") + "    env: {VIDEOKIT_OFFLOAD: model}\n",
    )
    _, text = deploy(offloaded, dry_run=True, api_key=None)
    assert "has less than" not in text


def test_gpu_pools_match_the_price_table_and_the_model_table() -> None:
    assert set(GPU_POOLS) == set(GPU_PRICE_PER_SECOND)
    import importlib.util

    spec = importlib.util.spec_from_file_location("vk_models_for_test", ROOT / "workers/models.py")
    assert spec is not None and spec.loader is not None
    models = importlib.util.module_from_spec(spec)
    import sys

    sys.modules[spec.name] = models
    spec.loader.exec_module(models)
    assert {key: c.vram_gb_resident for key, c in models.MODELS.items()} == MODEL_VRAM_GB
    assert {key: c.snapshot.repo_id for key, c in models.MODELS.items()} == MODEL_REPOS
    # The example caches what the images are built for: the snapshot commit the table pins.
    example = load_spec(EXAMPLE)
    for stage, worker in example.workers.items():
        choice = models.choose(stage, worker.env.get(models.MODEL_ENV[stage]))
        assert worker.weight_source == "cached"
        assert worker.cached_model == choice.snapshot.repo_id
        assert worker.cached_model_revision == choice.snapshot.revision


@pytest.mark.parametrize(
    ("versions", "expected"),
    [
        (None, "no allowed_cuda_versions: RunPod may place workers on hosts whose driver predates"),
        ('["13.0"]', None),  # a deliberate minimum above the images': nothing left out above it
        (
            '["12.6"]',
            "allowed_cuda_versions leaves out 12.7, 12.8, 12.9, 13.0: RunPod matches the list"
            " exactly",
        ),
        ('["12.6", "12.8", "12.9", "13.0"]', "allowed_cuda_versions leaves out 12.7:"),
        (
            '["12.4", "12.5", "12.6", "12.7", "12.8", "12.9", "13.0"]',
            "allowed_cuda_versions has 12.4, 12.5: the images need CUDA 12.6 or newer",
        ),
        ('["12.6", "12.7", "12.8", "12.9", "13.0"]', None),
    ],
)
def test_allowed_cuda_versions_that_lose_hosts_or_cannot_start_are_warned_about(
    tmp_path: Path, versions: str | None, expected: str | None
) -> None:
    from videokit.deploy import WORKER_CUDA, cuda_versions_from

    text = WORKER + "    network_volume_id: vol1\n"
    if versions is not None:
        text += f"    allowed_cuda_versions: {versions}\n"
    _, out = deploy(write_spec(tmp_path, text), dry_run=True, api_key=None)
    warnings = [line for line in out.splitlines() if "warning:" in line and "cuda" in line.lower()]
    if expected is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and expected in warnings[0], warnings
        # Every warning says what to write instead.
        assert "list [" in warnings[0] or "do not start" in warnings[0]
    assert cuda_versions_from(WORKER_CUDA) == ["12.6", "12.7", "12.8", "12.9", "13.0"]


# -- cached models ------------------------------------------------------------------------------------

CACHED = """
name_prefix: vk-cache
workers:
  animate:
    image: ghcr.io/acme/videokit-animate:0.1.0-loras
    gpus: [HOPPER_141]
    allowed_cuda_versions: ["12.6", "12.7", "12.8", "12.9", "13.0"]
    weights: cached
    cached_model: Wan-AI/Wan2.2-I2V-A14B-Diffusers
"""
WAN = "https://huggingface.co/Wan-AI/Wan2.2-I2V-A14B-Diffusers"


def test_weight_sources_are_explicit_or_implied(tmp_path: Path) -> None:
    def source(extra: str) -> str:
        spec = load_spec(write_spec(tmp_path, WORKER + extra))
        return spec.workers["edit"].weight_source

    assert source("") == "baked"
    assert source("    network_volume_id: vol1\n") == "volume"
    assert source("    cached_model: Qwen/Qwen-Image-Edit-2509\n") == "cached"
    assert source("    weights: baked\n    network_volume_id: vol1\n") == "baked"
    pinned = load_spec(
        write_spec(
            tmp_path,
            WORKER + "    cached_model: Qwen/Qwen-Image-Edit-2509\n"
            "    cached_model_revision: d3968ef930e841f4c73640fb8afa3b306a78167e\n",
        )
    )
    assert model_reference(pinned.workers["edit"]) == (
        "https://huggingface.co/Qwen/Qwen-Image-Edit-2509:d3968ef930e841f4c73640fb8afa3b306a78167e"
    )
    # The model the env selects decides which snapshot is right.
    other = load_spec(
        write_spec(
            tmp_path,
            WORKER + "    cached_model: Qwen/Qwen-Image-Edit-2511\n"
            "    env: {VIDEOKIT_QWEN_MODEL: '2511'}\n",
        )
    )
    assert model_reference(other.workers["edit"]) == (
        "https://huggingface.co/Qwen/Qwen-Image-Edit-2511:main"
    )


def test_a_volume_beside_a_cached_model_is_warned_about(tmp_path: Path) -> None:
    path = write_spec(tmp_path, CACHED + "    network_volume_id: vol1\n")
    _, text = deploy(path, dry_run=True, api_key=None)
    assert "warning: network_volume_id with weights: cached: RunPod mounts both" in text
    _, text = deploy(write_spec(tmp_path, CACHED), dry_run=True, api_key=None)
    assert "warning" not in text


def test_a_cached_model_deploys_with_valid_v2_bodies_and_the_command_that_attaches_it(
    runpod: RestEmulator, tmp_path: Path
) -> None:
    """The v2 bodies stay as RunPod's OpenAPI document has them (the emulator validates each, and
    no field exists for a cached model), and deploy says how to attach it, with the new id, until
    the endpoint reports it."""
    path = write_spec(tmp_path, CACHED)
    result, text = live(runpod, path)
    animate = result.workers["animate"]
    assert [(m, p) for m, p, _ in writes(runpod)] == [
        ("POST", "/v2/templates"), ("POST", "/v2/serverless"),
    ]  # fmt: skip
    for _, _, body in writes(runpod):
        assert body is not None
        assert not {k for k in body if "model" in k.lower()}
        assert "huggingface" not in json.dumps(body)
    endpoint = runpod.endpoints[animate.endpoint_id]
    assert endpoint["networkVolumes"] == [] and "modelReferences" not in endpoint
    assert (animate.cached_model, animate.cached_model_state) == (f"{WAN}:main", "absent")
    command = f"runpodctl serverless update {animate.endpoint_id} --model-reference {WAN}:main"
    assert command in text and "action needed: not attached yet" in text
    assert "warning" not in text

    # The answer carries no such field: deploy cannot tell, and says so.
    runpod.requests.clear()
    _, text = live(runpod, path)
    assert writes(runpod) == []
    assert "RunPod's v2 answer does not say" in text and command in text

    # RunPod's CLI attached it (the :main ref resolved to a commit): nothing more to do.
    endpoint["modelReferences"] = [f"{WAN}:596658fd9ca6b7b71d5057529bbf319ecbc61d74"]
    again, text = live(runpod, path)
    assert writes(runpod) == []
    assert again.workers["animate"].cached_model_state == "attached"
    assert f"cached model {WAN}:main: attached" in text and "runpodctl" not in text

    # A pinned commit must be that commit; another model is named.
    pinned = write_spec(tmp_path, CACHED + "    cached_model_revision: " + "a" * 40 + "\n")
    stale, text = live(runpod, pinned)
    assert stale.workers["animate"].cached_model_state == "other"
    assert "the endpoint caches another model" in text
    assert f"the endpoint reports: {WAN}:596658fd" in text
    endpoint["modelReferences"] = []
    _, text = live(runpod, pinned)
    assert "not attached yet" in text and f"--model-reference {WAN}:{'a' * 40}" in text
