"""RunPod REST API v2: the models against the OpenAPI document, the client against the emulator."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, ValidationError

from tests.rest_emulator import RestEmulator, rest_emulator
from videokit.backends.retry import RetryPolicy
from videokit.errors import ConfigError
from videokit.rest import models as m
from videokit.rest.client import RestError, RunPodRest

KEY = "rp_REST_TEST_KEY_never_shown_42"
MIRROR = Path("/work/.mirror/runpod+docs/repo")


async def _no_sleep(_: float) -> None:
    return None


def fast_policy() -> RetryPolicy:
    return RetryPolicy(attempts=3, sleep=_no_sleep)


@pytest.fixture
def emulator() -> Iterator[RestEmulator]:
    with rest_emulator(KEY) as emu:
        yield emu
    assert emu.invalid == []


def client(emu: RestEmulator, **kwargs: Any) -> RunPodRest:
    kwargs.setdefault("allow_key_to_any_host", True)
    return RunPodRest(KEY, base_url=emu.base_url, policy=fast_policy(), **kwargs)


# -- the models against the document ---------------------------------------------------------------


FIXTURE = Path(__file__).parent / "fixtures" / "runpod-rest-v2-schemas.json"


def _schemas() -> dict[str, Any]:
    """The schemas the models are written from: copied from RunPod's OpenAPI document at the
    commit the models name (tests/fixtures), and checked against the document itself wherever
    runpod/docs is mirrored."""
    stored = json.loads(FIXTURE.read_text())
    assert m.OPENAPI_COMMIT in stored["source"]
    schemas: dict[str, Any] = stored["schemas"]
    if MIRROR.exists():
        shown = subprocess.run(
            ["git", "-C", str(MIRROR), "show", f"{m.OPENAPI_COMMIT}:api-reference-v2/openapi.json"],
            capture_output=True,
            text=True,
        )
        if shown.returncode == 0:
            document = json.loads(shown.stdout)["components"]["schemas"]
            assert {name: document[name] for name in schemas} == schemas
    return schemas


def _flatten(schemas: dict[str, Any], schema: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(properties, required) of a schema, through $ref and allOf."""
    if "$ref" in schema:
        return _flatten(schemas, schemas[schema["$ref"].rsplit("/", 1)[-1]])
    props, required = set(schema.get("properties", {})), set(schema.get("required", []))
    for part in schema.get("allOf", []):
        more_props, more_required = _flatten(schemas, part)
        props |= more_props
        required |= more_required
    return props, required


@pytest.mark.parametrize(
    ("model", "name"),
    [
        (m.CreateTemplateRequest, "CreateTemplateRequest"),
        (m.UpdateTemplateRequest, "UpdateTemplateRequest"),
        (m.Template, "Template"),
        (m.CreateEndpointRequest, "CreateEndpointRequest"),
        (m.UpdateEndpointRequest, "UpdateEndpointRequest"),
        (m.Endpoint, "Endpoint"),
        (m.CreateEndpointGpuConfig, "CreateEndpointGpuConfig"),
        (m.UpdateEndpointGpuConfig, "UpdateEndpointGpuConfig"),
        (m.EndpointGpuConfig, "EndpointGpuConfig"),
        (m.EndpointWorkers, "EndpointWorkers"),
        (m.QueueDelayScaling, "QueueDelayScaling"),
        (m.RequestCountScaling, "RequestCountScaling"),
        (m.Worker, "Worker"),
        (m.ListEndpointWorkersResponse, "ListEndpointWorkersResponse"),
        (m.GpuType, "GpuType"),
        (m.ListGpuTypesResponse, "ListGpuTypesResponse"),
        (m.ServerlessBillingRecord, "ServerlessBillingRecord"),
        (m.ListServerlessBillingResponse, "ListServerlessBillingResponse"),
        (m.EndpointBillingRecord, "EndpointBillingRecord"),
        (m.ListEndpointBillingResponse, "ListEndpointBillingResponse"),
        (m.ErrorResponse, "ErrorResponse"),
    ],
)
def test_models_have_the_documents_fields_and_required_fields(
    model: type[BaseModel], name: str
) -> None:
    schemas = _schemas()
    props, required = _flatten(schemas, schemas[name])
    props -= {"cpu"} if model.__name__.endswith("Request") else set()  # CPU endpoints: not modelled
    fields = set(model.model_fields)
    assert fields == props, (fields - props, props - fields)
    ours = {f for f, info in model.model_fields.items() if info.is_required()}
    assert ours == required, (ours - required, required - ours)


def test_requests_are_strict_and_responses_tolerate_new_fields() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        m.CreateTemplateRequest.model_validate({"name": "t", "image": "i:1", "imageName": "x"})
    with pytest.raises(ValidationError):
        m.EndpointWorkers.model_validate({"min": "1"})  # strict: no string to int
    with pytest.raises(ValidationError, match="image is required"):
        m.CreateEndpointRequest.model_validate(
            {"name": "e", "type": "QUEUE", "scaling": {"type": "QUEUE_DELAY", "queueDelay": 4}}
        )
    with pytest.raises(ValidationError, match="exclude each other"):
        m.CreateEndpointGpuConfig.model_validate(
            {"pools": ["ADA_24"], "allowedCudaVersions": ["12.8"], "minCudaVersion": "12.6"}
        )
    with pytest.raises(ValidationError, match="String should match pattern"):
        m.CreateTemplateRequest.model_validate(
            {"name": "t", "image": "i:1", "allowedCudaVersions": ["cuda13"]}
        )
    worker = m.Worker.model_validate(
        {"id": "w1", "status": "IDLE", "isStale": False, "gpuCount": 1, "brandNew": 3}
    )
    assert worker.model_extra == {"brandNew": 3}


# -- the client ------------------------------------------------------------------------------------


def test_templates_and_endpoints_round_trip_through_the_emulator(emulator: RestEmulator) -> None:
    async def scenario() -> None:
        async with client(emulator) as rest:
            assert await rest.list_templates() == []
            template = await rest.create_template(
                m.CreateTemplateRequest(
                    name="t", image="img:1", env={"A": 'x"\\'}, serverless=True, disk=20
                )
            )
            assert template.env == {"A": 'x"\\'} and template.serverless
            patched = await rest.update_template(
                template.id, m.UpdateTemplateRequest(image="img:2")
            )
            assert (patched.image, patched.disk) == ("img:2", 20)
            endpoint = await rest.create_endpoint(
                m.CreateEndpointRequest(
                    name="e",
                    type="QUEUE",
                    templateId=template.id,
                    scaling=m.QueueDelayScaling(type="QUEUE_DELAY", queueDelay=4),
                    gpu=m.CreateEndpointGpuConfig(pools=["ADA_80_PRO"]),
                )
            )
            assert endpoint.image == "img:2" and endpoint.gpu is not None
            again = await rest.update_endpoint(
                endpoint.id, m.UpdateEndpointRequest(workers=m.EndpointWorkers(max=5))
            )
            assert again.workers.max == 5
            assert [e.id for e in await rest.list_endpoints()] == [endpoint.id]
            assert (await rest.get_endpoint(endpoint.id)).workers.max == 5
            assert (await rest.get_template(template.id)).image == "img:2"

    asyncio.run(scenario())
    assert [(r.method, r.path) for r in emulator.writes()] == [
        ("POST", "/v2/templates"),
        ("PATCH", "/v2/templates/tpl0001"),
        ("POST", "/v2/serverless"),
        ("PATCH", "/v2/serverless/ep0002"),
    ]
    assert emulator.writes()[1].body == {"image": "img:2"}  # only the fields set are sent


def test_the_key_goes_only_to_runpods_own_https_host() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json={"templates": []})

    async def list_with(base_url: str, **kwargs: Any) -> None:
        transport = httpx.MockTransport(handler)
        async with RunPodRest(KEY, base_url=base_url, transport=transport, **kwargs) as rest:
            await rest.list_templates()

    asyncio.run(list_with("https://api.runpod.io/v2"))
    asyncio.run(list_with("http://127.0.0.1:9/v2"))
    asyncio.run(list_with("https://proxy.example/v2"))
    asyncio.run(list_with("http://127.0.0.1:9/v2", allow_key_to_any_host=True))
    assert seen == [f"Bearer {KEY}", None, None, f"Bearer {KEY}"]
    with pytest.raises(ConfigError, match="https only"):
        RunPodRest(KEY, base_url="http://api.runpod.io/v2")
    with pytest.raises(ConfigError, match="not an http"):
        RunPodRest(KEY, base_url="ftp://example/v2")
    assert KEY not in repr(RunPodRest(KEY))


def test_refusals_are_not_retried_and_never_show_the_key_or_secrets(
    emulator: RestEmulator,
) -> None:
    async def call(rest: RunPodRest) -> None:
        async with rest:
            await rest.create_template(m.CreateTemplateRequest(name="t", image="i:1"))

    with pytest.raises(RestError) as caught:
        wrong = "rp_wrong_key_123"
        asyncio.run(call(RunPodRest(wrong, base_url=emulator.base_url, allow_key_to_any_host=True)))
    assert caught.value.status == 401 and "refused the API key" in str(caught.value)
    assert "rp_wrong_key_123" not in str(caught.value) and "RUNPOD_API_KEY" in str(caught.value)
    emulator.fail("POST", "/v2/templates", 422, detail=f"env value s3cr3t-value and {KEY} invalid")
    with pytest.raises(RestError) as caught:
        asyncio.run(call(client(emulator, secrets=["s3cr3t-value"])))
    message = str(caught.value)
    assert "POST /v2/templates: RunPod refused the request (422)" in message
    assert "s3cr3t-value" not in message and KEY not in message and "***" in message
    posts = [r for r in emulator.requests if r.method == "POST"]
    assert len(posts) == 2  # one each: neither was retried


def test_server_errors_are_retried_reads_until_a_deadline_writes_a_bounded_count(
    emulator: RestEmulator,
) -> None:
    emulator.fail("GET", "/v2/templates", 503, times=4)

    async def scenario() -> None:
        async with client(emulator, write_attempts=2) as rest:
            assert await rest.list_templates() == []  # 4 failures, then an answer
            emulator.fail("POST", "/v2/templates", 502, times=5)
            with pytest.raises(RestError, match=r"\(502\)") as caught:
                await rest.create_template(m.CreateTemplateRequest(name="t", image="i:1"))
            assert "try again in a few minutes" in str(caught.value)

    asyncio.run(scenario())
    assert [r.method for r in emulator.requests].count("GET") == 5
    assert [r.method for r in emulator.requests].count("POST") == 2


def test_an_answer_outside_the_schema_is_a_clear_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"templates": [{"id": "t1"}]})

    async def scenario() -> None:
        transport = httpx.MockTransport(handler)
        async with RunPodRest(KEY, transport=transport) as rest:
            await rest.list_templates()

    with pytest.raises(RestError, match="does not match the REST v2 schema") as caught:
        asyncio.run(scenario())
    assert "templates.0." in str(caught.value)


def test_an_unreachable_api_is_a_clear_error() -> None:
    async def scenario() -> None:
        base = "http://127.0.0.1:9/v2"
        async with RunPodRest(
            KEY, base_url=base, policy=fast_policy(), read_deadline_s=0.2
        ) as rest:
            await rest.list_endpoints()

    with pytest.raises(RestError, match=r"cannot reach RunPod's REST API at 127\.0\.0\.1"):
        asyncio.run(scenario())


def test_the_emulator_refuses_and_records_a_body_that_does_not_validate() -> None:
    with rest_emulator(KEY) as emu:
        answer = httpx.post(
            f"{emu.base_url}/templates",
            json={"name": "t", "imageName": "x"},
            headers={"Authorization": f"Bearer {KEY}"},
        )
        assert answer.status_code == 400
        assert emu.invalid and "imageName" in emu.invalid[0]
