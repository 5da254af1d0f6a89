"""``videokit deploy``: the spec, GraphQL escaping, and deploys against a fake RunPod.

The fake is a real HTTP server on 127.0.0.1 that the runpod SDK's own transport talks to (through
``RUNPOD_API_BASE_URL``). It parses every request with graphql-core, checks it against the fields
RunPod's schema has (a typo in a field name fails like it would on RunPod), and answers like
RunPod: ``saveTemplate``/``saveEndpoint`` create without ``id`` and update with it, template names
are unique, a FlashBoot endpoint's name comes back with `` -fb``.
"""

from __future__ import annotations

import io
import json
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import graphql
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from videokit.costs import GPU_PRICE_PER_SECOND
from videokit.deploy import (
    GPU_POOLS,
    INVENTORY_QUERY,
    MODEL_VRAM_GB,
    DeployError,
    GqlEnum,
    gql_string,
    gql_value,
    load_spec,
    run_deploy,
    save_endpoint_mutation,
    save_template_mutation,
)
from videokit.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "deploy.yaml"
API_KEY = "rp_TESTKEY_do_not_print_0123456789"

TRICKY = [
    'say "hi"',
    "back\\slash and \\n literally",
    "line one\nline two\r\n\ttabbed",
    "$HOME ${VAR} $(cmd) `tick`",
    "{ braces } [brackets] (parens) }",
    "unicode: é ü 中文 🎬 \u2028 \u00a0",
    "control: \x01\x1f\x7f",
    'injection", value: "x" }, { key: "INJECTED", value: "1',
    '""" block """',
    "# not a comment",
    "",
]


# -- the fake RunPod --------------------------------------------------------------------------------

TEMPLATE_FIELDS = {
    "id", "name", "imageName", "isServerless", "containerDiskInGb", "volumeInGb", "dockerArgs",
    "containerRegistryAuthId", "env", "ports", "volumeMountPath", "startSsh", "isPublic", "readme",
}  # fmt: skip
ENDPOINT_FIELDS = {
    "id", "name", "templateId", "gpuIds", "gpuCount", "networkVolumeId", "locations",
    "idleTimeout", "scalerType", "scalerValue", "workersMin", "workersMax", "executionTimeoutMs",
    "flashBootType", "allowedCudaVersions",
}  # fmt: skip
STRING_FIELDS = {
    "id", "name", "imageName", "dockerArgs", "containerRegistryAuthId", "templateId", "gpuIds",
    "networkVolumeId", "locations", "scalerType", "allowedCudaVersions",
}  # fmt: skip
INT_FIELDS = {
    "containerDiskInGb", "volumeInGb", "gpuCount", "idleTimeout", "scalerValue", "workersMin",
    "workersMax", "executionTimeoutMs",
}  # fmt: skip


@dataclass(frozen=True)
class Enum:
    name: str


class GraphQLFault(Exception):
    pass


def to_python(node: graphql.language.ValueNode) -> Any:
    """A literal as Python, keeping enums apart from strings (RunPod's schema tells them apart)."""
    if isinstance(node, graphql.language.StringValueNode):
        return node.value
    if isinstance(node, graphql.language.IntValueNode):
        return int(node.value)
    if isinstance(node, graphql.language.BooleanValueNode):
        return node.value
    if isinstance(node, graphql.language.NullValueNode):
        return None
    if isinstance(node, graphql.language.EnumValueNode):
        return Enum(node.value)
    if isinstance(node, graphql.language.ListValueNode):
        return [to_python(item) for item in node.values]
    if isinstance(node, graphql.language.ObjectValueNode):
        return {f.name.value: to_python(f.value) for f in node.fields}
    raise GraphQLFault(f"unsupported literal {node.kind}")


@dataclass
class FakeRunPod:
    api_key: str = API_KEY
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    mutations: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    queries: int = 0
    raw: list[str] = field(default_factory=list)
    fail_with: str | None = None
    fail_endpoints: int = 0  # refuse this many saveEndpoint calls
    port: int = 0
    _next: int = 0

    def new_id(self, prefix: str) -> str:
        self._next += 1
        return f"{prefix}{self._next:04d}"

    # -- the schema, as far as deploy uses it

    def check_input(self, data: dict[str, Any], allowed: set[str], what: str) -> None:
        for key, value in data.items():
            if key not in allowed:
                raise GraphQLFault(f'Field "{key}" is not defined by type "{what}".')
            if key in STRING_FIELDS and not isinstance(value, str):
                raise GraphQLFault(f"{what}.{key}: String cannot represent {value!r}")
            if key in INT_FIELDS and (not isinstance(value, int) or isinstance(value, bool)):
                raise GraphQLFault(f"{what}.{key}: Int cannot represent {value!r}")
        if "flashBootType" in data and data["flashBootType"] not in (
            Enum("FLASHBOOT"),
            Enum("OFF"),
        ):
            raise GraphQLFault("flashBootType: expected an enum value FLASHBOOT or OFF")
        if "isServerless" in data and not isinstance(data["isServerless"], bool):
            raise GraphQLFault("isServerless: Boolean expected")
        if "env" in data:
            env = data["env"]
            if not isinstance(env, list) or not all(
                isinstance(e, dict)
                and set(e) == {"key", "value"}
                and all(isinstance(v, str) for v in e.values())
                for e in env
            ):
                raise GraphQLFault("env: [EnvironmentVariableInput]! expected")

    def save_template(self, data: dict[str, Any]) -> dict[str, Any]:
        self.check_input(data, TEMPLATE_FIELDS, "PodTemplateInput")
        if "id" in data:
            record = self.templates.get(data["id"])
            if record is None:
                raise GraphQLFault("Template not found")
            record.update(data)
            return record
        for field_name in ("name", "imageName", "containerDiskInGb", "volumeInGb", "env"):
            if field_name not in data:
                raise GraphQLFault(f"PodTemplateInput.{field_name} is required")
        if any(t["name"] == data["name"] for t in self.templates.values()):
            raise GraphQLFault("Template name must be unique")
        record = {"isServerless": False, "dockerArgs": "", "containerRegistryAuthId": None, **data}
        record["id"] = self.new_id("tpl")
        self.templates[record["id"]] = record
        return record

    def save_endpoint(self, data: dict[str, Any]) -> dict[str, Any]:
        self.check_input(data, ENDPOINT_FIELDS, "EndpointInput")
        if self.fail_endpoints:
            self.fail_endpoints -= 1
            raise GraphQLFault("There are no longer any instances available with the requested GPU")
        if data.get("templateId") not in self.templates:
            raise GraphQLFault(f"template {data.get('templateId')!r} not found")
        stored = dict(data)
        if "flashBootType" in stored:
            stored["flashBootType"] = stored["flashBootType"].name
            if stored["flashBootType"] == "FLASHBOOT" and "name" in stored:
                stored["name"] = f"{stored['name']} -fb"  # what RunPod shows for FlashBoot
        if "id" in data:
            record = self.endpoints.get(data["id"])
            if record is None:
                raise GraphQLFault("Endpoint not found")
            record.update(stored)
            return record
        for field_name in ("name", "templateId", "gpuIds"):
            if field_name not in data:
                raise GraphQLFault(f"EndpointInput.{field_name} is required")
        record = {"flashBootType": "OFF", "allowedCudaVersions": None, **stored}
        record["id"] = self.new_id("ep")
        self.endpoints[record["id"]] = record
        return record

    # -- execution

    def execute(self, query: str) -> dict[str, Any]:
        document = graphql.parse(query)  # a syntax error fails the whole request
        (operation,) = document.definitions
        assert isinstance(operation, graphql.language.OperationDefinitionNode)
        data: dict[str, Any] = {}
        for selection in operation.selection_set.selections:
            assert isinstance(selection, graphql.language.FieldNode)
            name = selection.name.value
            if operation.operation == graphql.language.OperationType.QUERY:
                if name != "myself":
                    raise GraphQLFault(f'Cannot query field "{name}" on type "Query".')
                self.queries += 1
                data[name] = self.project_myself(selection)
                continue
            (argument,) = selection.arguments
            value = to_python(argument.value)
            if name == "saveTemplate":
                record, kinds = self.save_template(value), TEMPLATE_FIELDS
            elif name == "saveEndpoint":
                record, kinds = self.save_endpoint(value), ENDPOINT_FIELDS
            else:
                raise GraphQLFault(f'Cannot query field "{name}" on type "Mutation".')
            self.mutations.append((name, value))
            data[name] = self.project(record, selection, kinds)
        return data

    def project_myself(self, node: graphql.language.FieldNode) -> dict[str, Any]:
        assert node.selection_set is not None
        out: dict[str, Any] = {}
        for selection in node.selection_set.selections:
            assert isinstance(selection, graphql.language.FieldNode)
            name = selection.name.value
            if name == "podTemplates":
                out[name] = [
                    self.project(t, selection, TEMPLATE_FIELDS) for t in self.templates.values()
                ]
            elif name == "endpoints":
                out[name] = [
                    self.project(e, selection, ENDPOINT_FIELDS) for e in self.endpoints.values()
                ]
            else:
                raise GraphQLFault(f'Cannot query field "{name}" on type "User".')
        return out

    def project(
        self, record: dict[str, Any], node: graphql.language.FieldNode, known: set[str]
    ) -> dict[str, Any]:
        assert node.selection_set is not None
        out: dict[str, Any] = {}
        for selection in node.selection_set.selections:
            assert isinstance(selection, graphql.language.FieldNode)
            name = selection.name.value
            if name not in known:
                raise GraphQLFault(f'Cannot query field "{name}".')
            value = record.get(name)
            if name == "env" and value is not None:
                value = [{"key": e["key"], "value": e["value"]} for e in value]
            out[name] = value
        return out


@pytest.fixture
def runpod(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRunPod]:
    state = FakeRunPod()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return None

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path.split("?")[0] != "/graphql":
                return self.reply(404, {"errors": [{"message": "not found"}]})
            if self.headers.get("Authorization") != f"Bearer {state.api_key}":
                return self.reply(401, {"errors": [{"message": "Unauthorized"}]})
            query = json.loads(body)["query"]
            with lock:
                state.raw.append(query)
                if state.fail_with is not None:
                    return self.reply(200, {"errors": [{"message": state.fail_with}]})
                try:
                    data = state.execute(query)
                except graphql.GraphQLSyntaxError as exc:
                    return self.reply(400, {"errors": [{"message": f"Syntax Error: {exc}"}]})
                except GraphQLFault as exc:
                    return self.reply(200, {"errors": [{"message": str(exc)}], "data": None})
            self.reply(200, {"data": data})

        def reply(self, status: int, document: dict[str, Any]) -> None:
            payload = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("RUNPOD_API_BASE_URL", f"http://127.0.0.1:{state.port}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def no_transport(query: str, api_key: str) -> dict[str, Any]:
    raise AssertionError("the API must not be called")


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


def test_dry_run_of_the_example_plans_both_workers_with_every_field() -> None:
    result, text = deploy(EXAMPLE, dry_run=True, api_key=None, transport=no_transport)
    assert set(result.workers) == {"edit", "animate"}
    for stage in ("edit", "animate"):
        assert f"  template videokit-{stage}: create or update" in text
        assert f"  endpoint videokit-{stage}: create or update" in text
        worker = result.workers[stage]
        assert (worker.template_action, worker.endpoint_action) == ("create or update",) * 2
        assert worker.endpoint_id is None
    for name in (
        "imageName", "containerDiskInGb", "volumeInGb", "dockerArgs", "isServerless", "env:",
        "templateId", "gpuIds", "gpuCount", "workersMin", "workersMax", "idleTimeout",
        "executionTimeoutMs", "scalerType", "scalerValue", "flashBootType", "networkVolumeId",
        "locations", "allowedCudaVersions",
    ):  # fmt: skip
        assert text.count(f"    {name}") == 2, name
    assert 'imageName: "ghcr.io/your-org/videokit-edit:0.1.0"' in text
    assert 'gpuIds: "ADA_80_PRO,AMPERE_80"' in text
    assert "flashBootType: FLASHBOOT" in text
    assert "executionTimeoutMs: 300000" in text
    assert 'VIDEOKIT_QWEN_MODEL = "2509"' in text
    assert result.env_lines == [
        "VIDEOKIT_EDIT_ENDPOINT=<id of endpoint videokit-edit>",
        "VIDEOKIT_EDIT_GPU=ADA_80_PRO",
        "VIDEOKIT_ANIMATE_ENDPOINT=<id of endpoint videokit-animate>",
        "VIDEOKIT_ANIMATE_GPU=ADA_80_PRO",
    ]
    assert text.rstrip().endswith("\n".join(result.env_lines))


def test_offline_dry_run_never_calls_the_api_even_with_a_key() -> None:
    _, text = deploy(EXAMPLE, dry_run=True, api_key=API_KEY, offline=True, transport=no_transport)
    assert API_KEY not in text
    assert "were not looked up" in text


def test_dry_run_masks_secret_values_but_shows_runpod_secret_references(tmp_path: Path) -> None:
    _, text = deploy(write_spec(tmp_path, spec_text()), dry_run=True, api_key=None)
    assert "the-real-secret-value" not in text
    assert "S3_SECRET_ACCESS_KEY = ******** (secret, not shown)" in text
    assert 'BUCKET_KEY_REF = "{{ RUNPOD_SECRET_bucket }}"' in text
    assert f"TRICKY = {json.dumps(TRICKY_VALUE, ensure_ascii=False)}" in text


def test_deploying_needs_a_key() -> None:
    with pytest.raises(ConfigError, match="RUNPOD_API_KEY is not set"):
        deploy(EXAMPLE, dry_run=False, api_key="  ", transport=no_transport)


# -- escaping ---------------------------------------------------------------------------------------


def parse_input(literal: str) -> Any:
    document = graphql.parse(f"mutation {{ saveTemplate(input: {literal}) {{ id }} }}")
    operation = document.definitions[0]
    assert isinstance(operation, graphql.language.OperationDefinitionNode)
    selection = operation.selection_set.selections[0]
    assert isinstance(selection, graphql.language.FieldNode)
    return to_python(selection.arguments[0].value)


@pytest.mark.parametrize("value", TRICKY)
def test_strings_round_trip_through_a_real_graphql_parser(value: str) -> None:
    env = [{"key": "A", "value": value}, {"key": "B", "value": "after"}]
    assert parse_input(gql_value({"env": env})) == {"env": env}


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=("Cs",))))
def test_any_text_round_trips(value: str) -> None:
    assert parse_input(gql_value({"name": value, "n": 3, "ok": True})) == {
        "name": value,
        "n": 3,
        "ok": True,
    }


def test_the_sdks_own_template_mutation_breaks_on_these_values() -> None:
    """Why deploy builds its own mutations: the SDK pastes env values in unescaped."""
    from runpod.api.mutations.templates import generate_pod_template

    injected = generate_pod_template(
        "t", "img:1", env={"A": 'x" }, { key: "INJECTED", value: "1'}, is_serverless=True
    )
    env = parse_input(injected.split("input:", 1)[1].rsplit(") {", 1)[0].strip())["env"]
    assert {"key": "INJECTED", "value": "1"} in env  # a second variable appeared
    with pytest.raises(graphql.GraphQLSyntaxError):
        graphql.parse(generate_pod_template("t", "img:1", env={"A": "back\\slash"}))
    hostile = 'x" }, { key: "INJECTED", value: "1'
    ours = save_template_mutation({"name": "t", "env": [{"key": "A", "value": hostile}]})
    literal = ours.split("input:", 1)[1].rsplit(") {", 1)[0].strip()
    assert parse_input(literal)["env"] == [{"key": "A", "value": hostile}]


def test_gql_value_refuses_what_it_cannot_write_safely() -> None:
    with pytest.raises(ValueError, match="field name"):
        gql_value({"bad key": 1})
    with pytest.raises(ValueError, match="enum"):
        GqlEnum("NOT AN ENUM")
    with pytest.raises(ValueError, match="enum"):
        GqlEnum("true")
    with pytest.raises(TypeError):
        gql_value(1.5)
    with pytest.raises(ValueError, match="surrogate"):
        gql_string("\ud800")
    assert gql_value([GqlEnum("OFF"), None, False]) == "[OFF, null, false]"


def test_every_query_and_mutation_parses() -> None:
    graphql.parse(INVENTORY_QUERY)
    graphql.parse(save_endpoint_mutation({"name": "x", "flashBootType": GqlEnum("OFF")}, "ep1"))


# -- against the fake RunPod ------------------------------------------------------------------------


def test_first_deploy_creates_then_a_second_changes_nothing_then_an_edit_updates_in_place(
    runpod: FakeRunPod, tmp_path: Path
) -> None:
    path = write_spec(tmp_path, spec_text())
    result, text = deploy(path, dry_run=False, api_key=API_KEY)

    assert [name for name, _ in runpod.mutations] == ["saveTemplate", "saveEndpoint"] * 2
    assert len(runpod.templates) == 2 and len(runpod.endpoints) == 2
    edit = result.workers["edit"]
    assert (edit.template_action, edit.endpoint_action) == ("create", "create")
    assert edit.endpoint_id in runpod.endpoints
    # Every value arrived exactly as written, tricky characters included.
    template = runpod.templates[edit.template_id]
    env = {e["key"]: e["value"] for e in template["env"]}
    assert env["TRICKY"] == TRICKY_VALUE
    assert env["BUCKET_KEY_REF"] == "{{ RUNPOD_SECRET_bucket }}"
    assert template["isServerless"] is True
    endpoint = runpod.endpoints[edit.endpoint_id]
    assert endpoint["templateId"] == edit.template_id
    assert endpoint["gpuIds"] == "ADA_80_PRO,AMPERE_80"
    assert endpoint["executionTimeoutMs"] == 300_000
    assert endpoint["allowedCudaVersions"] == "13.0"
    assert endpoint["networkVolumeId"] == "vol123"
    assert endpoint["flashBootType"] == "FLASHBOOT"
    animate = runpod.endpoints[result.workers["animate"].endpoint_id]
    assert animate["flashBootType"] == "OFF" and animate["networkVolumeId"] == ""
    assert animate["name"] == "vk-test-animate"
    # The output: ids and .env lines, never the key or a secret value.
    assert f"VIDEOKIT_EDIT_ENDPOINT={edit.endpoint_id}" in text.splitlines()
    assert "VIDEOKIT_EDIT_GPU=ADA_80_PRO" in text.splitlines()
    assert f"VIDEOKIT_ANIMATE_ENDPOINT={result.workers['animate'].endpoint_id}" in text
    assert "VIDEOKIT_ANIMATE_GPU=HOPPER_141" in text
    assert API_KEY not in text and "the-real-secret-value" not in text

    # Again: found by name (the FlashBoot one as "vk-test-edit -fb"), nothing to change.
    runpod.mutations.clear()
    again, text = deploy(path, dry_run=False, api_key=API_KEY)
    assert runpod.mutations == []
    assert len(runpod.templates) == 2 and len(runpod.endpoints) == 2
    assert again.workers["edit"].endpoint_id == edit.endpoint_id
    assert again.workers["edit"].endpoint_action == "unchanged"
    assert f"VIDEOKIT_EDIT_ENDPOINT={edit.endpoint_id}" in text

    # A new image tag and more workers: both updated in place, with their ids.
    edited = write_spec(
        tmp_path,
        spec_text()
        .replace("videokit-edit:0.1.0", "videokit-edit:0.2.0")
        .replace("workers_max: 2", "workers_max: 4"),
    )
    runpod.mutations.clear()
    third, text = deploy(edited, dry_run=False, api_key=API_KEY)
    assert [(name, value.get("id")) for name, value in runpod.mutations] == [
        ("saveTemplate", edit.template_id),
        ("saveEndpoint", edit.endpoint_id),
    ]
    assert third.workers["edit"].template_action == "update"
    assert third.workers["animate"].endpoint_action == "unchanged"
    assert runpod.templates[edit.template_id]["imageName"] == "ghcr.io/acme/videokit-edit:0.2.0"
    assert runpod.endpoints[edit.endpoint_id]["workersMax"] == 4
    assert len(runpod.templates) == 2 and len(runpod.endpoints) == 2
    assert (
        'imageName: "ghcr.io/acme/videokit-edit:0.2.0"   (was "ghcr.io/acme/videokit-edit:0.1.0")'
        in text
    )
    assert "workersMax: 4   (was 2)" in text


def test_dry_run_with_a_key_reads_what_exists_and_changes_nothing(
    runpod: FakeRunPod, tmp_path: Path
) -> None:
    path = write_spec(tmp_path, spec_text())
    deploy(path, dry_run=False, api_key=API_KEY)
    runpod.mutations.clear()
    runpod.templates[next(iter(runpod.templates))]["env"].append({"key": "OLD", "value": "x"})
    result, text = deploy(path, dry_run=True, api_key=API_KEY)
    assert runpod.mutations == []
    assert "(existing templates and endpoints were looked up, read-only)" in text
    assert result.workers["edit"].template_action == "update"
    assert result.workers["edit"].endpoint_action == "update"  # re-saved to roll the workers
    assert result.workers["animate"].template_action == "unchanged"
    assert "      OLD   (removed)" in text
    assert f"VIDEOKIT_EDIT_ENDPOINT={result.workers['edit'].endpoint_id}" in text


def test_existing_template_made_by_hand_is_adopted_not_duplicated(
    runpod: FakeRunPod, tmp_path: Path
) -> None:
    runpod.save_template(
        {"name": "vk-test-edit", "imageName": "old:1", "containerDiskInGb": 5, "volumeInGb": 0,
         "env": [], "isServerless": True}
    )  # fmt: skip
    result, _ = deploy(write_spec(tmp_path, spec_text()), dry_run=False, api_key=API_KEY)
    assert result.workers["edit"].template_action == "update"
    assert len(runpod.templates) == 2
    assert runpod.templates["tpl0001"]["imageName"] == "ghcr.io/acme/videokit-edit:0.1.0"


def test_a_deploy_that_failed_halfway_is_finished_by_running_it_again(
    runpod: FakeRunPod, tmp_path: Path
) -> None:
    path = write_spec(tmp_path, spec_text())
    runpod.fail_endpoints = 1
    with pytest.raises(DeployError, match="no longer any instances available"):
        deploy(path, dry_run=False, api_key=API_KEY)
    assert len(runpod.templates) == 1 and not runpod.endpoints
    result, _ = deploy(path, dry_run=False, api_key=API_KEY)
    assert result.workers["edit"].template_action == "unchanged"
    assert result.workers["edit"].endpoint_action == "create"
    assert len(runpod.templates) == 2 and len(runpod.endpoints) == 2


def test_duplicate_names_are_an_error_not_a_guess(runpod: FakeRunPod, tmp_path: Path) -> None:
    path = write_spec(tmp_path, spec_text())
    deploy(path, dry_run=False, api_key=API_KEY)
    template_id = next(iter(runpod.endpoints.values()))["templateId"]
    runpod.endpoints["ep9999"] = {"id": "ep9999", "name": "vk-test-edit", "templateId": template_id}
    with pytest.raises(DeployError, match="2 endpoints are named 'vk-test-edit'"):
        deploy(path, dry_run=False, api_key=API_KEY)


def test_a_pod_template_with_the_name_is_not_taken_over(runpod: FakeRunPod, tmp_path: Path) -> None:
    runpod.save_template(
        {"name": "vk-test-edit", "imageName": "pod:1", "containerDiskInGb": 5, "volumeInGb": 0,
         "env": [], "isServerless": False}
    )  # fmt: skip
    with pytest.raises(DeployError, match="pod \\(not serverless\\) template"):
        deploy(write_spec(tmp_path, spec_text()), dry_run=False, api_key=API_KEY)
    assert runpod.mutations == []


def test_a_wrong_key_is_reported_without_echoing_it(runpod: FakeRunPod, tmp_path: Path) -> None:
    with pytest.raises(DeployError) as caught:
        deploy(write_spec(tmp_path, spec_text()), dry_run=False, api_key="rp_WRONG_KEY_123456")
    assert "401" in str(caught.value)
    assert "rp_WRONG_KEY_123456" not in str(caught.value)


def test_api_errors_are_reported_without_the_query_or_secrets(
    runpod: FakeRunPod, tmp_path: Path
) -> None:
    runpod.fail_with = "boom: value the-real-secret-value rejected"
    with pytest.raises(DeployError) as caught:
        deploy(write_spec(tmp_path, spec_text()), dry_run=False, api_key=API_KEY)
    message = str(caught.value)
    assert "boom" in message
    assert "the-real-secret-value" not in message and "mutation" not in message
    assert API_KEY not in message


def test_unreachable_api_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RUNPOD_API_BASE_URL", "http://127.0.0.1:9")  # discard port: refused
    with pytest.raises(DeployError, match="cannot reach the RunPod API"):
        deploy(write_spec(tmp_path, spec_text()), dry_run=False, api_key=API_KEY)


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
