"""Everything the worker images run, run here: no Docker, no GPU, no network.

* ``workers/download_models.py``: ``--list``, ``--dry-run``, ``--verify`` on complete and broken
  layouts, ``--bake 0``, and a whole download against a stand-in ``huggingface_hub``;
* the table in ``workers/models.py`` against the engines' own tables and file checks: a directory
  laid out from it is one the engines load from;
* each Dockerfile: parsed; every file it copies or runs exists and is in the build context; it
  installs the versions of requirements/lock.txt (what CI tests with); no secret in an
  ARG/ENV; its bake step and its CMD are executed (``--test_input`` with the preview engine, and
  the tiny one: the real pipeline classes with tiny weights);
* ``.github/workflows/workers.yml`` points at those Dockerfiles.
"""

from __future__ import annotations

import ast
import base64
import importlib.util
import io
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from PIL import Image

from tests.fakehub import FakeHub

ROOT = Path(__file__).resolve().parent.parent
WORKERS = ROOT / "workers"
STAGES = ("edit", "animate")
MODEL_VAR = {"edit": "VIDEOKIT_QWEN_MODEL", "animate": "VIDEOKIT_WAN_MODEL"}


def load_path(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


models = load_path("vk_workers_models", WORKERS / "models.py")
#: The one number of bake layers (workers/bake_steps.py writes the Dockerfiles' steps from it).
BAKE_LAYERS: int = load_path("vk_download_models_n", WORKERS / "download_models.py").BAKE_LAYERS


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a worker script: none of ours, and never RunPod's job queue."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VIDEOKIT_", "RUNPOD_", "HF_")) and k != "BAKE_MODELS"
    }
    env.update(extra)
    return env


def run(
    args: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def download(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "workers/download_models.py", *args], clean_env(**env))


# -- a model directory shaped like the real repositories ------------------------------------------


def write(path: Path, data: bytes | str = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def make_snapshot(folder: Path, snapshot: Any) -> None:
    """A diffusers snapshot as the Hub has it: index, configs, tokenizers, sharded weights."""
    edit = snapshot.folder.startswith("Qwen-Image-Edit")
    components = [*snapshot.weight_components, "scheduler", "tokenizer"]
    if edit:
        components.append("processor")
    index = {"_class_name": "Pipeline", "_diffusers_version": "0.42.1"}
    index.update({name: ["diffusers", "Class"] for name in components})
    if "transformer_2" in snapshot.weight_components:
        index.update({"image_encoder": [None, None], "image_processor": [None, None]})
    write(folder / "model_index.json", json.dumps(index))
    write(folder / "scheduler/scheduler_config.json", "{}")
    for tokenizer in ["tokenizer", *(["processor"] if edit else [])]:
        for name in ("tokenizer_config.json", "tokenizer.json", "vocab.json", "merges.txt"):
            write(folder / tokenizer / name, "{}")
    if edit:
        write(folder / "processor/preprocessor_config.json", "{}")
    for component in snapshot.weight_components:
        write(folder / component / "config.json", "{}")
        stem = "model" if component == "text_encoder" else "diffusion_pytorch_model"
        if component == "vae":
            write(folder / component / f"{stem}.safetensors", b"w" * 64)
            continue
        shards = [f"{stem}-0000{i}-of-00002.safetensors" for i in (1, 2)]
        for shard in shards:
            write(folder / component / shard, b"w" * 100)
        weight_map = {f"layer.{i}": shard for i, shard in enumerate(shards)}
        write(
            folder / component / f"{stem}.safetensors.index.json",
            json.dumps({"metadata": {"total_size": 190}, "weight_map": weight_map}),
        )


def make_layout(root: Path, choice: Any, mode: str) -> Path:
    make_snapshot(root / choice.snapshot.folder, choice.snapshot)
    for item in choice.files(mode):
        write(root / item.local_path, b"lora" * 16)
    return root


CASES = [(key, mode) for key, choice in sorted(models.MODELS.items()) for mode in choice.modes]


# -- the table against the engines ------------------------------------------------------------------


def engine_check(choice: Any, mode: str, root: Path) -> list[str]:
    """What the engine itself says is missing under ``root`` (its own load-time check)."""
    if choice.stage == "edit":
        from videokit.worker import qwen

        return list(qwen.missing_files(root, qwen.MODELS[choice.key], mode))
    pytest.importorskip("torch")
    from videokit.worker import wan_config

    return wan_config.missing_files(root, wan_config.MODELS[choice.key], mode)


@pytest.mark.parametrize(("key", "mode"), CASES)
def test_a_layout_from_the_table_is_complete_for_the_script_and_the_engine(
    tmp_path: Path, key: str, mode: str
) -> None:
    choice = models.MODELS[key]
    root = make_layout(tmp_path, choice, mode)
    assert models.verify(choice, mode, root) == []
    assert engine_check(choice, mode, root) == []


def test_the_table_names_what_the_engines_load() -> None:
    from videokit.worker import qwen

    edit = {k: c for k, c in models.MODELS.items() if c.stage == "edit"}
    assert set(edit) == set(qwen.MODELS)
    assert tuple(Path(d) for d in models.default_model_dirs("edit")) == qwen.DEFAULT_MODEL_DIRS
    for key, choice in edit.items():
        spec = qwen.MODELS[key]
        assert (choice.snapshot.repo_id, choice.snapshot.folder) == (spec.repo, spec.folder)
        assert choice.snapshot.revision == spec.revision  # the engine downloads the pinned commit
        loras = choice.files("lightning")
        assert {Path(f.local_path).name for f in loras} == set(spec.loras.values())
        for item in loras:
            name = Path(item.local_path).name
            assert item.repo_id == spec.lora_repo
            assert item.revision == spec.lora_revision
            assert item.local_path == f"loras/{name}"
            expected = f"{spec.lora_subfolder}/{name}" if spec.lora_subfolder else name
            assert item.repo_path == expected

    pytest.importorskip("torch")
    from videokit.worker import wan, wan_config

    animate = {k: c for k, c in models.MODELS.items() if c.stage == "animate"}
    assert set(animate) == set(wan.MODELS)
    assert tuple(Path(d) for d in models.default_model_dirs("animate")) == wan.DEFAULT_MODEL_DIRS
    for key, choice in animate.items():
        spec = wan.MODELS[key]
        assert (choice.snapshot.repo_id, choice.snapshot.folder) == (spec.repo_id, spec.folder)
        assert choice.snapshot.revision == spec.revision
        assert ("lightning" in choice.modes) == spec.lightning
        assert ("transformer_2" in choice.snapshot.weight_components) == spec.two_experts
        if spec.lightning:
            loras = choice.files("lightning")
            _, high, low = wan.LORA_SETS[0]
            assert [Path(f.local_path).name for f in loras] == [high, low]
            for item in loras:
                name = Path(item.local_path).name
                assert (item.repo_id, item.revision) == (
                    wan_config.LORA_REPO,
                    wan_config.LORA_REVISION,
                )
                assert item.repo_path == f"{wan_config.LORA_REPO_FOLDER}/{name}"


BREAKAGES: list[tuple[str, Callable[[Path], None], str]] = [
    (
        "a shard",
        lambda f: (f / "transformer/diffusion_pytorch_model-00002-of-00002.safetensors").unlink(),
        "missing: {folder}/transformer/diffusion_pytorch_model-00002-of-00002.safetensors",
    ),
    (
        "a truncated shard",
        lambda f: (f / "text_encoder/model-00001-of-00002.safetensors").write_bytes(b"w"),
        "truncated: {folder}/text_encoder/ shards hold 101 bytes",
    ),
    (
        "the index",
        lambda f: (f / "model_index.json").unlink(),
        "missing: {folder}/model_index.json",
    ),
    (
        "a component the index names",
        lambda f: [p.unlink() for p in (f / "tokenizer").iterdir()],
        "empty: {folder}/tokenizer/",
    ),
    ("a config", lambda f: (f / "vae/config.json").unlink(), "missing: {folder}/vae/config.json"),
    (
        "an interrupted download",
        lambda f: write(f / ".cache/huggingface/download/transformer/x.safetensors.incomplete"),
        "interrupted download: {folder}/.cache/huggingface/download/transformer/",
    ),
]


@pytest.mark.parametrize(("what", "damage", "expected"), BREAKAGES, ids=[b[0] for b in BREAKAGES])
def test_verify_names_what_is_missing_and_exits_1(
    tmp_path: Path, what: str, damage: Callable[[Path], None], expected: str
) -> None:
    choice = models.MODELS["2509"]
    root = make_layout(tmp_path / "qwen-edit", choice, "lightning")
    assert download("--worker", "edit", "--target", str(root), "--verify").returncode == 0
    damage(root / choice.snapshot.folder)
    result = download("--worker", "edit", "--target", str(root), "--verify")
    assert result.returncode == 1, result.stdout
    assert "2509 (lightning) is incomplete in" in result.stdout
    assert expected.format(folder=choice.snapshot.folder) in result.stdout


def test_verify_of_a_missing_lora_and_an_empty_directory(tmp_path: Path) -> None:
    choice = models.MODELS["a14b"]
    root = make_layout(tmp_path / "wan", choice, "lightning")
    lora = root / choice.files("lightning")[1].local_path
    lora.unlink()
    result = download("--worker", "animate", "--target", str(root), "--verify")
    assert result.returncode == 1
    assert f"missing: loras/{lora.name}" in result.stdout
    # Standard mode needs no LoRA: the same directory is complete for it.
    ok = download("--worker", "animate", "--mode", "standard", "--target", str(root), "--verify")
    assert ok.returncode == 0, ok.stdout
    empty = download("--worker", "animate", "--target", str(tmp_path / "nothing"), "--verify")
    assert empty.returncode == 1
    assert "missing: Wan2.2-I2V-A14B-Diffusers/ (all of Wan-AI/Wan2.2-I2V-A14B-Diffusers)" in (
        empty.stdout
    )


# -- download_models.py: dry run, bake, arguments -------------------------------------------------


def test_list_names_every_model() -> None:
    result = download("--list")
    assert result.returncode == 0
    for key in models.MODELS:
        assert key in result.stdout
    assert "2509 (default)" in result.stdout and "a14b (default)" in result.stdout


@pytest.mark.parametrize(("key", "mode"), CASES)
def test_dry_run_prints_every_repository_and_destination(
    tmp_path: Path, key: str, mode: str
) -> None:
    choice = models.MODELS[key]
    target = tmp_path / "models"
    result = download(
        "--worker", choice.stage, "--model", key, "--mode", mode, "--target", str(target),
        "--dry-run",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"{choice.stage} model {key} ({mode} mode)" in out
    revision = choice.snapshot.revision
    assert f"{choice.snapshot.repo_id} @ {revision} -> {target / choice.snapshot.folder}" in out
    for item in choice.files(mode):
        line = f"{item.repo_id} @ {item.revision}: {item.repo_path} -> {target / item.local_path}"
        assert line in out
    assert "token: none (public repositories)" in out
    assert out.rstrip().endswith("dry run: nothing downloaded")
    assert not target.exists()


def test_defaults_come_from_the_worker_environment(tmp_path: Path) -> None:
    result = run(
        [sys.executable, "workers/download_models.py", "--worker", "edit", "--dry-run"],
        clean_env(
            VIDEOKIT_QWEN_MODEL="2511",
            VIDEOKIT_QWEN_MODE="standard",
            VIDEOKIT_MODEL_DIR=str(tmp_path),
        ),
    )
    assert result.returncode == 0
    assert "edit model 2511 (standard mode)" in result.stdout
    assert f"-> {tmp_path / 'Qwen-Image-Edit-2511'}" in result.stdout
    assert "loras/" not in result.stdout
    default = download("--worker", "animate", "--dry-run")
    assert "/runpod-volume/models/wan/Wan2.2-I2V-A14B-Diffusers" in default.stdout


def test_the_token_source_is_printed_never_the_token(tmp_path: Path) -> None:
    token_file = tmp_path / "hf_token"
    token_file.write_text("hf_FILETOKEN123\n")
    from_file = download("--worker", "edit", "--dry-run", "--token-file", str(token_file))
    assert f"token: secret file {token_file}" in from_file.stdout
    from_env = download("--worker", "edit", "--dry-run", HF_TOKEN="hf_ENVTOKEN456")
    assert "token: HF_TOKEN from the environment" in from_env.stdout
    for result in (from_file, from_env):
        assert "hf_FILETOKEN123" not in result.stdout + result.stderr
        assert "hf_ENVTOKEN456" not in result.stdout + result.stderr
    missing = download("--worker", "edit", "--dry-run", "--token-file", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_bad_arguments_exit_2() -> None:
    assert download("--worker", "edit", "--model", "a14b", "--dry-run").returncode == 2
    assert "unknown edit model 'a14b'" in download("--worker", "edit", "--model", "a14b").stderr
    ti2v = download("--worker", "animate", "--model", "ti2v-5b", "--mode", "lightning")
    assert ti2v.returncode == 2 and "has no 'lightning' mode" in ti2v.stderr
    assert download("--dry-run").returncode == 2  # no --worker
    assert download("--worker", "edit", "--bake", "2").returncode == 2


def test_downloading_is_refused_offline(tmp_path: Path) -> None:
    result = download("--worker", "edit", "--target", str(tmp_path / "m"), HF_HUB_OFFLINE="1")
    assert result.returncode == 2
    assert "HF_HUB_OFFLINE is set" in result.stderr


# -- a whole download, against a stand-in for huggingface_hub -------------------------------------


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    """The stand-in Hub (tests/fakehub.py) holding every repository of the table, laid out like
    the real ones with tiny files; the script gets it as ``main(argv, hub=...)``."""
    hub = FakeHub(remote=tmp_path / "remote")
    for choice in models.MODELS.values():
        make_snapshot(hub.remote / choice.snapshot.repo_id, choice.snapshot)
        for mode in choice.modes:
            for item in choice.files(mode):
                hub.add(item.repo_id, item.repo_path, b"lora" * 16)
    # The script points HF_HOME at its scratch folder: setenv then delenv, so that whatever it
    # sets in os.environ is undone after the test.
    for name in ("HF_HOME", "HF_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY",
                 "VIDEOKIT_MODEL_DIR", "VIDEOKIT_WAN_MODEL", "VIDEOKIT_WAN_MODE"):  # fmt: skip
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    yield hub


def test_a_download_fetches_the_table_into_the_engine_layout_and_verifies_it(
    fake_hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = load_path("vk_download_models", WORKERS / "download_models.py")
    token_file = tmp_path / "hf_token"
    token_file.write_text("hf_SECRET_TOKEN_789")
    target = tmp_path / "models" / "wan"
    code = script.main(
        [
            "--worker",
            "animate",
            "--target",
            str(target),
            "--bake",
            "1",
            "--token-file",
            str(token_file),
        ],
        hub=fake_hub,
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "a14b (lightning): complete in" in out
    assert "hf_SECRET_TOKEN_789" not in out
    kinds = [(kind, call["repo_id"]) for kind, call in fake_hub.calls]
    assert kinds == [
        ("snapshot", "Wan-AI/Wan2.2-I2V-A14B-Diffusers"),
        ("file", "Comfy-Org/Wan_2.2_ComfyUI_Repackaged"),
        ("file", "Comfy-Org/Wan_2.2_ComfyUI_Repackaged"),
    ]
    snapshot_call = fake_hub.calls[0][1]
    assert snapshot_call["token"] == "hf_SECRET_TOKEN_789"
    assert snapshot_call["local_dir"] == target / "Wan2.2-I2V-A14B-Diffusers"
    assert "*/*.safetensors" in snapshot_call["allow_patterns"]
    # The engine finds what was downloaded; no scratch folder (HF_HOME) is left behind.
    assert engine_check(models.MODELS["a14b"], "lightning", target) == []
    assert fake_hub.hf_home and not Path(fake_hub.hf_home[0]).exists()
    assert sorted(p.name for p in target.iterdir()) == ["Wan2.2-I2V-A14B-Diffusers", "loras"]
    # Run again: the LoRAs are there already and are not fetched twice.
    fake_hub.calls.clear()
    assert script.main(["--worker", "animate", "--target", str(target)], hub=fake_hub) == 0
    assert [kind for kind, _ in fake_hub.calls] == ["snapshot"]
    assert fake_hub.calls[0][1]["token"] is False  # no token: never one found on disk


# -- the Dockerfiles --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def parse_dockerfile(path: Path) -> list[Instruction]:
    instructions: list[Instruction] = []
    buffer, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        keyword, _, args = buffer.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        buffer = ""
    assert not buffer, f"{path}: unterminated continuation"
    return instructions


def dockerfile(stage: str) -> list[Instruction]:
    return parse_dockerfile(WORKERS / stage / "Dockerfile")


def arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    out: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "ARG" and "=" in ins.args:
            name, _, value = ins.args.partition("=")
            out[name] = value
    return out


def env_pairs(ins: Instruction) -> dict[str, str]:
    return dict(token.split("=", 1) for token in shlex.split(ins.args))


def dockerignore_allows(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes."""
    included = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.removeprefix("**/")
        parts = path.split("/")
        matched = any(
            fnmatch("/".join(parts[: i + 1]), body) or fnmatch(parts[i], body)
            for i in range(len(parts))
        )
        if matched:
            included = negate
    return included


def ignore_patterns(stage: str) -> list[str]:
    text = (WORKERS / stage / "Dockerfile.dockerignore").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("stage", STAGES)
def test_every_copied_file_exists_and_is_in_the_build_context(stage: str) -> None:
    patterns = ignore_patterns(stage)
    copies = [ins for ins in dockerfile(stage) if ins.keyword == "COPY"]
    assert copies
    for ins in copies:
        *sources, _destination = shlex.split(ins.args)
        for source in sources:
            assert not source.startswith("--"), "no COPY --from/--chown expected"
            assert (ROOT / source).exists(), f"line {ins.line}: {source} does not exist"
            assert dockerignore_allows(patterns, source), f"{source} is excluded from the context"
    for secret in (".env", ".venv/bin/python", "tests/test_deploy.py", "out/x", ".git/config"):
        assert not dockerignore_allows(patterns, secret), f"{secret} would be sent to the builder"
    assert dockerignore_allows(patterns, "videokit/worker/handler.py")
    assert not dockerignore_allows(patterns, "videokit/__pycache__/x.pyc")


@pytest.mark.parametrize("stage", STAGES)
def test_every_script_a_run_or_cmd_names_exists(stage: str) -> None:
    instructions = dockerfile(stage)
    scripts = []
    for ins in instructions:
        if ins.keyword in ("RUN", "CMD", "ENTRYPOINT"):
            scripts += re.findall(r"[\w./-]+\.(?:py|sh)\b", ins.args)
    assert f"workers/{stage}/handler.py" in scripts
    assert "workers/download_models.py" in scripts
    for script in scripts:
        assert (ROOT / script).is_file(), script
    (cmd,) = [ins for ins in instructions if ins.keyword == "CMD"]
    assert json.loads(cmd.args) == ["python", "-u", f"workers/{stage}/handler.py"]
    (entry,) = [ins for ins in instructions if ins.keyword == "ENTRYPOINT"]
    assert json.loads(entry.args) == ["/usr/bin/tini", "--"]


LOCK = ROOT / "requirements" / "lock.txt"
# What the images install besides videokit itself: the GPU stack the engines are tested with.
IMAGE_PACKAGES = ("diffusers", "transformers", "accelerate", "peft", "safetensors",
                  "huggingface-hub", "hf-xet", "ftfy", "sentencepiece", "torchao")  # fmt: skip


def locked_versions() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", LOCK.read_text(), re.MULTILINE)
    return {name.lower(): version for name, version in pins}


def pip_installs(instructions: list[Instruction]) -> list[list[str]]:
    """Every `pip install ...` in the RUN steps, as argument lists (after `install`)."""
    found = []
    for ins in instructions:
        if ins.keyword != "RUN":
            continue
        for command in ins.args.split("&&"):
            words = shlex.split(command)
            if words[:2] == ["pip", "install"]:
                found.append(words[2:])
    return found


@pytest.mark.parametrize("stage", STAGES)
def test_the_bake_steps_have_every_module_the_script_loads(stage: str) -> None:
    """download_models.py loads its siblings by path; the image copies them before its bake
    steps (videokit is not installed yet there), or the first step fails in the build."""
    script = (WORKERS / "download_models.py").read_text()
    siblings = {f"workers/{name}.py" for name in re.findall(r'_load_sibling\("(\w+)"\)', script)}
    assert siblings >= {"workers/models.py", "workers/hub_fetch.py"}
    instructions = dockerfile(stage)
    first_bake = next(
        n for n, ins in enumerate(instructions)
        if ins.keyword == "RUN" and "download_models.py" in ins.args
    )  # fmt: skip
    copied = {
        source
        for ins in instructions[:first_bake]
        if ins.keyword == "COPY"
        for source in shlex.split(ins.args)[:-1]
    }
    assert siblings <= copied, siblings - copied


@pytest.mark.parametrize("stage", STAGES)
def test_the_image_installs_the_locked_versions(stage: str, tmp_path: Path) -> None:
    """The images take their versions from requirements/lock.txt, the lock CI installs: every
    pip install is constrained by it, except torch's, which is the lock's release built for CUDA."""
    instructions = dockerfile(stage)
    locked = locked_versions()
    copies = [ins.args.split() for ins in instructions if ins.keyword == "COPY"]
    assert ["requirements/lock.txt", "/opt/videokit-lock.txt"] in copies
    # The step that makes the constraints file, run here on the real lock.
    text = " ".join(ins.args for ins in instructions if ins.keyword == "RUN")
    (make_constraints,) = re.findall(r"grep [^&]*/opt/videokit-constraints\.txt", text)
    script = make_constraints.replace("/opt/videokit-lock.txt", str(LOCK)).replace(
        "/opt/videokit-constraints.txt", str(tmp_path / "constraints.txt")
    )
    subprocess.run(["sh", "-c", script], check=True)
    constraints = (tmp_path / "constraints.txt").read_text()
    assert not re.search(r"^torch==", constraints, re.MULTILINE)
    assert constraints == re.sub(r"^torch==.*\n", "", LOCK.read_text(), flags=re.MULTILINE)

    installs = pip_installs(instructions)
    torch_installs = [args for args in installs if any(a.startswith("torch==") for a in args)]
    assert len(torch_installs) == 1
    (torch_pin,) = [a for a in torch_installs[0] if a.startswith("torch==")]
    assert torch_pin.removeprefix("torch==").split("+")[0] == locked["torch"].split("+")[0]
    named: set[str] = set()
    for args in installs:
        if args is torch_installs[0]:
            continue
        assert args[:2] == ["--constraint", "/opt/videokit-constraints.txt"], args
        for arg in args[2:]:
            if arg.startswith("/tmp/videokit-src"):
                assert arg == "/tmp/videokit-src[gpu]"
                continue
            assert "==" not in arg, f"{arg}: versions come from the lock, not the Dockerfile"
            assert arg.lower() in locked, f"{arg} is not in requirements/lock.txt"
            named.add(arg.lower())
    assert named == set(IMAGE_PACKAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_the_cuda_version_agrees_between_image_torch_and_deploy_spec(stage: str) -> None:
    """One CUDA version throughout: the base image's, the torch wheel's (local version and
    index), videokit.deploy's, and the hosts the example deploy spec accepts: that version and
    every newer one RunPod has (it matches the list exactly; a driver runs older CUDA too)."""
    from videokit.deploy import RUNPOD_CUDA_VERSIONS, WORKER_CUDA, cuda_versions_from

    instructions = dockerfile(stage)
    base = arg_defaults(instructions)["BASE_IMAGE"]
    image = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-base-ubuntu24\.04", base)
    assert image, base
    cuda = f"{image[1]}.{image[2]}"
    tag = "cu" + cuda.replace(".", "")
    text = " ".join(ins.args for ins in instructions if ins.keyword == "RUN")
    torch_installs = [cmd for cmd in text.split("&&") if re.search(r"pip install .*\btorch==", cmd)]
    assert len(torch_installs) == 1, torch_installs
    (torch_install,) = torch_installs
    assert re.search(rf"\btorch==\d+\.\d+\.\d+\+{tag}\b", torch_install), torch_install
    assert f"--index-url https://download.pytorch.org/whl/{tag} " in torch_install
    assert cuda == WORKER_CUDA
    spec = yaml.safe_load((ROOT / "examples/deploy.yaml").read_text())
    wanted = cuda_versions_from(cuda)
    assert wanted[0] == cuda and wanted[-1] == RUNPOD_CUDA_VERSIONS[-1]
    assert spec["workers"][stage]["allowed_cuda_versions"] == wanted
    readme = (WORKERS / "README.md").read_text()
    assert base in readme and f"torch==2.13.0+{tag}" in readme
    assert "allowed_cuda_versions: [" + ", ".join(f'"{v}"' for v in wanted) + "]" in readme


@pytest.mark.parametrize("stage", STAGES)
def test_the_image_installs_videokit_with_the_extras_it_has(stage: str) -> None:
    """``.[gpu]``: the engines' stack. The worker's own needs (runpod, fastapi, uvicorn) are core
    dependencies, so no other extra is named, and the README says the same."""
    text = " ".join(ins.args for ins in dockerfile(stage) if ins.keyword == "RUN")
    (extras,) = re.findall(r'"/tmp/videokit-src\[([^\]]*)\]"', text)
    assert extras.split(",") == ["gpu"]
    # pyproject.toml itself: an editable install's metadata can predate it.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["optional-dependencies"]["gpu"]
    core = {
        re.split(r"[<>=!~;\[ ]", item, maxsplit=1)[0].lower() for item in project["dependencies"]
    }
    assert {"runpod", "fastapi", "uvicorn"} <= core
    readme = " ".join((WORKERS / "README.md").read_text().split())
    assert 'pip install ".[gpu]"' in readme
    assert "its `worker` and `gpu` extras" not in readme


@pytest.mark.parametrize("stage", STAGES)
def test_no_secret_is_baked_and_the_image_runs_offline_and_unprivileged(stage: str) -> None:
    instructions = dockerfile(stage)
    for ins in instructions:
        names = (
            [ins.args.partition("=")[0]] if ins.keyword == "ARG" else list(env_pairs(ins))
            if ins.keyword == "ENV" else []
        )  # fmt: skip
        for name in names:
            assert not re.search(r"TOKEN|KEY|SECRET|PASSW", name, re.I), f"line {ins.line}: {name}"
    text = (WORKERS / stage / "Dockerfile").read_text()
    assert "HF_TOKEN" not in "".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")
    )
    keywords = [ins.keyword for ins in instructions]
    bakes = bake_steps(stage)
    for bake in bakes:
        if "--layer" in bake.args:  # the downloading steps; the final --verify needs no token
            assert bake.args.startswith("--mount=type=secret,id=hf_token ")
    offline = next(
        i for i, ins in enumerate(instructions)
        if ins.keyword == "ENV" and env_pairs(ins).get("HF_HUB_OFFLINE") == "1"
    )  # fmt: skip
    assert instructions.index(bakes[-1]) < offline < keywords.index("CMD")
    runtime = next(env_pairs(i) for i in instructions if i.keyword == "ENV" and "RUNPOD" in i.args)
    assert runtime["RUNPOD_DEBUG_LEVEL"] == "INFO"  # the SDK's DEBUG prints job outputs
    (user,) = [ins for ins in instructions if ins.keyword == "USER"]
    assert user.args.split(":")[0] not in ("root", "0")
    assert instructions.index(user) < keywords.index("CMD")
    defaults = arg_defaults(instructions)
    assert defaults["BAKE_MODELS"] == "0"
    assert defaults[MODEL_VAR[stage]] == models.DEFAULT_MODEL[stage]
    engine_env = next(
        env_pairs(i) for i in instructions if i.keyword == "ENV" and "VIDEOKIT_ENGINE" in i.args
    )
    assert engine_env["VIDEOKIT_ENGINE"] == "diffusers"
    # Expandable segments: jobs of changing sizes do not fragment the GPU memory into an OOM.
    assert runtime["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"


def test_the_two_dockerfiles_differ_only_in_their_worker() -> None:
    def normalise(stage: str) -> str:
        text = (WORKERS / stage / "Dockerfile").read_text()
        code = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
        sub = models.MODEL_SUBDIR[stage]
        for old in (f"/models/{sub}", MODEL_VAR[stage], models.DEFAULT_MODEL[stage], stage):
            code = code.replace(old, "<worker>")
        return code

    assert normalise("edit") == normalise("animate")
    assert ignore_patterns("edit") == ignore_patterns("animate")


def bake_steps(stage: str) -> list[Instruction]:
    return [i for i in dockerfile(stage) if i.keyword == "RUN" and "download_models.py" in i.args]


def bake_argv(ins: Instruction, env: dict[str, str]) -> list[str]:
    """A bake step's arguments for download_models.py, with the build args expanded as the
    shell in the RUN would (every value is a plain, quoted ``"${NAME}"``)."""
    command = re.sub(r"^(--mount=\S+\s+)+", "", ins.args)
    argv = shlex.split(re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], command))
    assert argv[:2] == ["python", "workers/download_models.py"], argv
    return argv[2:]


@pytest.mark.parametrize("stage", STAGES)
def test_bake_models_0_makes_every_bake_step_fetch_nothing(
    stage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    steps = bake_steps(stage)
    assert len(steps) == BAKE_LAYERS + 1  # the layers, then the check
    build_args = {**arg_defaults(dockerfile(stage)), "BAKE_MODELS": "0"}
    # The first step as the RUN's shell runs it, the rest in this process (the same argv).
    command = re.sub(r"^(--mount=\S+\s+)+", "", steps[0].args)
    first = run(["bash", "-c", sys.executable + command[len("python") :]], clean_env(**build_args))
    assert first.returncode == 0, first.stderr
    assert "BAKE_MODELS=0: no weights in the image" in first.stdout
    assert f"/runpod-volume/models/{models.MODEL_SUBDIR[stage]}" in first.stdout
    script = load_path("vk_download_models_bake0", WORKERS / "download_models.py")
    capsys.readouterr()
    for ins in steps[1:]:
        assert script.main(bake_argv(ins, build_args)) == 0
    assert capsys.readouterr().out == ""  # quiet no-ops


@pytest.mark.parametrize("stage", STAGES)
def test_bake_models_loras_bakes_only_the_loras_one_per_layer(
    stage: str, fake_hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``BAKE_MODELS=loras``: the Dockerfile's bake steps, as written, fetch the LoRAs alone
    (each in its own layer) and no snapshot, the check passes on them, and the engine then
    finds a complete set once the snapshot is beside them (from a RunPod cached model)."""
    script = load_path("vk_download_models_loras", WORKERS / "download_models.py")
    build_args = {**arg_defaults(dockerfile(stage)), "BAKE_MODELS": "loras"}
    target = tmp_path / "image" / "models" / models.MODEL_SUBDIR[stage]
    choice = models.MODELS[models.DEFAULT_MODEL[stage]]
    layers: list[set[str]] = []
    for ins in bake_steps(stage):
        before = {p for p in target.rglob("*") if p.is_file()} if target.is_dir() else set()
        argv = bake_argv(ins, build_args)
        argv[argv.index("--target") + 1] = str(target)
        assert script.main(argv, hub=fake_hub) == 0, capsys.readouterr()
        after = {p for p in target.rglob("*") if p.is_file()} if target.is_dir() else set()
        layers.append({p.relative_to(target).as_posix() for p in after - before})
    out = capsys.readouterr().out
    loras = [item.local_path for item in choice.files("lightning")]
    assert len(loras) == 2
    assert layers[: len(loras)] == [{name} for name in loras]  # one LoRA per layer
    assert all(layer == set() for layer in layers[len(loras) :])
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == (
        sorted(loras)
    )
    assert {kind for kind, _ in fake_hub.calls} == {"file"}  # never the snapshot
    assert [call["revision"] for _, call in fake_hub.calls] == [
        item.revision for item in choice.files("lightning")
    ]
    assert out.count("BAKE_MODELS=loras: only the LoRAs") == 1
    assert f"{choice.key} (lightning) LoRAs: complete in {target}" in out  # the final --verify
    assert script.main(["--worker", stage, "--target", str(target), "--verify"]) == 1
    # The snapshot beside them (as a cached model provides it): the whole set is complete.
    make_snapshot(target / choice.snapshot.folder, choice.snapshot)
    assert models.verify(choice, "lightning", target) == []
    # A missing LoRA fails the LoRA check.
    (target / loras[0]).unlink()
    assert (
        script.main(["--worker", stage, "--target", str(target), "--bake", "loras", "--verify"])
        == 1
    )
    assert f"missing: {loras[0]}" in capsys.readouterr().out
    assert script.lora_layer(["a", "b", "c"], 2, 2) == ["b", "c"]
    assert script.lora_layer(["a", "b"], 3, 30) == []


def test_bake_loras_in_standard_mode_and_as_a_dry_run(tmp_path: Path) -> None:
    standard = download(
        "--worker", "animate", "--mode", "standard", "--target", str(tmp_path), "--bake", "loras"
    )
    assert standard.returncode == 0 and "has no LoRA files: nothing to bake" in standard.stdout
    dry = download("--worker", "edit", "--target", str(tmp_path), "--bake", "loras", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "not Qwen/Qwen-Image-Edit-2509: only the LoRAs" in dry.stdout
    assert "Qwen-Image-Edit-2509-Lightning-8steps-V1.0-bf16.safetensors" in dry.stdout
    assert dry.stdout.rstrip().endswith("dry run: nothing downloaded")
    assert not any(tmp_path.iterdir())


def test_hub_revisions_are_commits_and_sizes_add_up() -> None:
    """Every pinned revision is a full commit hash (a branch name would move); the sizes are the
    files' (the bake plan and the README use them)."""
    for key, choice in models.MODELS.items():
        pins = [choice.snapshot.revision] + [
            f.revision for m in choice.modes for f in choice.files(m)
        ]
        for pin in pins:
            assert pin is None or re.fullmatch(r"[0-9a-f]{40}", pin), (key, pin)
    wan = models.MODELS["a14b"]
    assert [f.approx_gb for f in wan.files("lightning")] == [1.21, 1.21]
    assert wan.approx_gb("lightning") == 128.6
    assert models.MODELS["2509"].approx_gb("lightning") == 59.4


def test_the_dockerfiles_bake_steps_are_written_from_bake_layers() -> None:
    """N is one number, BAKE_LAYERS: each Dockerfile runs --layer 1/N .. N/N and then the check,
    exactly as workers/bake_steps.py writes them (BuildKit has no loops: one RUN per layer)."""
    check = run([sys.executable, "workers/bake_steps.py", "--check"], clean_env())
    assert check.returncode == 0, check.stderr
    steps = load_path("vk_bake_steps", WORKERS / "bake_steps.py")
    for stage in STAGES:
        layers = [re.search(r"--layer (\S+)", i.args) for i in bake_steps(stage)]
        assert [m.group(1) if m else None for m in layers] == [
            *(f"{k}/{BAKE_LAYERS}" for k in range(1, BAKE_LAYERS + 1)),
            None,  # the --verify step
        ]
        text = (WORKERS / stage / "Dockerfile").read_text()
        assert steps.render(stage) in text
        # Another N is another set of steps; a hand-edited step is written back.
        three = steps.render(stage, layers=3)
        assert three.count("--layer ") == 3 and "--layer 3/3" in three
        stale = text.replace(f"--layer 2/{BAKE_LAYERS}", f"--layer 2/{BAKE_LAYERS + 1}")
        assert stale != text and steps.updated(stale, stage) == text
        with pytest.raises(ValueError, match="no bake-step markers"):
            steps.updated(text.replace(steps.BEGIN, ""), stage)
    # The page that explains the layers gives the same numbers.
    readme = (WORKERS / "README.md").read_text()
    for said in (
        f"`BAKE_LAYERS` ({BAKE_LAYERS}) `RUN` steps",
        f"`download_models.py --layer K/{BAKE_LAYERS}`",
        f"plans the other {BAKE_LAYERS - 1}:",
        f"spell the {BAKE_LAYERS + 1} steps out",
    ):
        assert said in " ".join(readme.split()), said


@pytest.mark.parametrize("stage", STAGES)
def test_the_layered_bake_runs_as_written_and_fills_the_engine_layout(
    stage: str, fake_hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every bake RUN of the Dockerfile, in order, as written (the target moved to a temporary
    folder), against a stand-in Hub: each step is one image layer, so each must add its own
    files (none twice, none rewritten) in groups of about equal size, and together they make
    a layout the engine loads from."""
    script = load_path("vk_download_models_layers", WORKERS / "download_models.py")
    instructions = dockerfile(stage)
    build_args = {**arg_defaults(instructions), "BAKE_MODELS": "1"}
    target = tmp_path / "image" / "models" / models.MODEL_SUBDIR[stage]
    layers: list[dict[str, int]] = []
    before: dict[str, int] = {}
    for ins in bake_steps(stage):
        argv = bake_argv(ins, build_args)
        argv[argv.index("--target") + 1] = str(target)
        assert script.main(argv, hub=fake_hub) == 0, capsys.readouterr()
        now = {
            p.relative_to(target).as_posix(): p.stat().st_mtime_ns
            for p in target.rglob("*")
            if p.is_file() and ".cache" not in p.parts
        }
        assert all(now[name] == stamp for name, stamp in before.items())  # nothing rewritten
        layers.append({name: (target / name).stat().st_size for name in now if name not in before})
        before = now
    out = capsys.readouterr().out
    choice = models.MODELS[models.DEFAULT_MODEL[stage]]
    assert f"{choice.key} (lightning): complete in {target}" in out  # the final --verify
    assert engine_check(choice, "lightning", target) == []
    assert not list(target.glob(".download-*"))  # no scratch left in any layer
    # Layer 1: everything but weights, including the shard indexes the next layers read, and
    # the plan, made from the Hub's own sizes (a dry run: nothing downloaded).
    first = layers[0]
    assert first and not any(name.endswith(".safetensors") for name in first)
    assert any(name.endswith(".safetensors.index.json") for name in first)
    assert script.PLAN_FILE in first
    assert f"sizes: the Hub's file listing of {choice.snapshot.repo_id}" in out
    dry_runs = [c for kind, c in fake_hub.calls if kind == "snapshot" and c.get("dry_run")]
    assert len(dry_runs) == 1 and "local_dir" not in dry_runs[0]
    weights = layers[1:-1]
    assert len(weights) == BAKE_LAYERS - 1 and layers[-1] == {}  # the check adds nothing
    fetched = [name for layer in weights for name in layer]
    assert len(fetched) == len(set(fetched))
    assert set(fetched) == {n for n in before if n.endswith(".safetensors")}
    # Each step fetched exactly its group of layer 1's plan (the sizes of the real models are
    # the next tests': these files are a few bytes each).
    plan = script.read_plan(choice, "lightning", target, BAKE_LAYERS)
    folder = choice.snapshot.folder
    for layer, group in zip(weights, plan, strict=True):
        expected = {
            u.file.local_path if u.file is not None else f"{folder}/{u.pattern}" for u in group
        }
        assert set(layer) == expected
    # Exact sizes where the Hub has them, the unindexed VAE included; LoRAs from the table.
    units = {u.name: u for group in plan for u in group}
    vae = units["vae/diffusion_pytorch_model.safetensors"]
    assert (vae.approx_bytes, vae.size_from) == (64, "hub")
    assert {u.size_from for u in units.values()} == {"hub", "table"}
    assert sum(1 for layer in weights if layer) >= 3


def _real_sized_hub(tmp_path: Path, choice: Any, vae_bytes: int) -> FakeHub:
    """A stand-in Hub whose dry run reports the sizes of Wan2.2-I2V-A14B-Diffusers in fp32 (12
    shards per expert, 5 for UMT5, an unsharded VAE); the local target gets the indexes."""
    hub = FakeHub(remote=tmp_path / "remote")
    repo = choice.snapshot.repo_id
    for component, shards, total in (
        ("transformer", 12, 57_200_000_000),
        ("transformer_2", 12, 57_200_000_000),
        ("text_encoder", 5, 22_700_000_000),
    ):
        names = [f"part-{i:05d}-of-{shards:05d}.safetensors" for i in range(1, shards + 1)]
        index = json.dumps(
            {
                "metadata": {"total_size": total},
                "weight_map": {f"w{i}": name for i, name in enumerate(names)},
            }
        )
        write(
            tmp_path / "target" / choice.snapshot.folder / component
            / "diffusion_pytorch_model.safetensors.index.json",
            index,
        )  # fmt: skip
        for name in names:
            hub.add(repo, f"{component}/{name}", b"w")
            hub.declared_sizes[f"{repo}/{component}/{name}"] = total // shards
    hub.add(repo, "vae/diffusion_pytorch_model.safetensors", b"w")
    hub.declared_sizes[f"{repo}/vae/diffusion_pytorch_model.safetensors"] = vae_bytes
    (tmp_path / "target" / choice.snapshot.folder / "vae").mkdir(parents=True)
    return hub


def test_weight_layers_stay_under_the_registry_limit_at_real_sizes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The plan at the real model's sizes, as the Hub reports them: each weight layer is under
    the ~10 GB some registries accept, and a cut that cannot fit stops the bake at layer 1,
    with a hint, before any weight is downloaded."""
    script = load_path("vk_download_models_split", WORKERS / "download_models.py")
    choice = models.MODELS["a14b"]
    hub = _real_sized_hub(tmp_path, choice, vae_bytes=508_000_000)
    target = tmp_path / "target"
    cap = script.MAX_LAYER_GB
    assert script._plan_layers(choice, "lightning", target, None, BAKE_LAYERS, cap, hub) == 0
    out = capsys.readouterr().out
    assert f"sizes: the Hub's file listing of {choice.snapshot.repo_id}" in out
    groups = script.read_plan(choice, "lightning", target, BAKE_LAYERS)
    units = [u for g in groups for u in g]
    assert len(units) == 12 + 12 + 5 + 1 + 2  # shards, the unsharded VAE, two LoRAs
    assert units == script.weight_units(
        choice, "lightning", target, listed=script.hub_weight_sizes(choice, target, None, hub)[0]
    )  # the plan is the split of what the Hub lists, in order, each once
    sizes = [sum(u.approx_bytes for u in g) / 1e9 for g in groups]
    assert max(sizes) < cap, sizes
    assert [u.approx_bytes for u in units if u.name.startswith("vae/")] == [508_000_000]
    # Too few steps for these sizes: refused at layer 1, naming the constant to raise.
    assert script._plan_layers(choice, "lightning", target, None, 5, cap, hub) == 1
    err = capsys.readouterr().err
    assert "do not fit 4 weight layers of at most 9.5 GB" in err
    assert "raise BAKE_LAYERS in workers/download_models.py" in err


def test_a_file_over_the_layer_cap_gets_a_layer_of_its_own_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One file larger than the cap cannot be split: it is planned alone (never with others),
    the plan and its own layer say why, and the bake goes on."""
    script = load_path("vk_download_models_alone", WORKERS / "download_models.py")
    choice = models.MODELS["a14b"]
    hub = _real_sized_hub(tmp_path, choice, vae_bytes=12_300_000_000)
    target = tmp_path / "target"
    cap = script.MAX_LAYER_GB
    assert script._plan_layers(choice, "lightning", target, None, BAKE_LAYERS, cap, hub) == 0
    out = capsys.readouterr().out
    note = (
        "note: vae/diffusion_pytorch_model.safetensors alone is ~12.3 GB, over the 9.5 GB layer"
        " cap; one file cannot be split, so it gets a layer of its own"
    )
    assert note in out
    groups = script.read_plan(choice, "lightning", target, BAKE_LAYERS)
    (k, lone), *others = [
        (k, g) for k, g in enumerate(groups, 2) if any(u.name.startswith("vae/") for u in g)
    ]
    assert not others and [u.name for u in lone] == ["vae/diffusion_pytorch_model.safetensors"]
    assert max(sum(u.approx_bytes for u in g) for g in groups if g is not lone) < cap * 1e9
    # Its own bake step fetches it, saying the same.
    assert script._bake_layer(choice, "lightning", target, None, k, BAKE_LAYERS, cap, hub) == 0
    assert note in capsys.readouterr().out
    assert (target / choice.snapshot.folder / "vae/diffusion_pytorch_model.safetensors").is_file()
    # The split itself: without the cap the big file would share a layer with its neighbours.
    units = [u for g in groups for u in g]
    shared = script.split_layers(units, 8)
    assert any(len(g) > 1 and any(u.name.startswith("vae/") for u in g) for g in shared)
    alone = script.split_layers(units, 8, alone_over=int(cap * 1e9))
    assert [len(g) for g in alone if any(u.name.startswith("vae/") for u in g)] == [1]


def test_without_the_hub_listing_sizes_are_estimated_and_a_guess_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = load_path("vk_download_models_guess", WORKERS / "download_models.py")
    choice = models.MODELS["a14b"]
    _real_sized_hub(tmp_path, choice, vae_bytes=508_000_000)
    target = tmp_path / "target"
    empty = FakeHub(remote=tmp_path / "nothing")  # its listing fails: no such repository
    code = script._plan_layers(
        choice, "lightning", target, None, BAKE_LAYERS, script.MAX_LAYER_GB, empty
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "sizes: the Hub's file listing failed (FileNotFoundError: the stand-in Hub has no" in out
    assert (
        "size of vae/*.safetensors unknown (no index, and nothing from the Hub's listing): "
        "planned at a guessed 1.0 GB"
    ) in out
    units = {
        u.name: u for g in script.read_plan(choice, "lightning", target, BAKE_LAYERS) for u in g
    }
    assert units["vae/*.safetensors"].size_from == "guess"
    shard = units["transformer/part-00001-of-00012.safetensors"]
    assert (shard.approx_bytes, shard.size_from) == (57_200_000_000 // 12, "index")
    # Each planned layer names how its size was estimated ("hub" sizes are exact, unnamed).
    lone = next(line for line in out.splitlines() if line.startswith("  layer") and "vae/" in line)
    assert re.search(r"\(sizes from: [a-z, ]*guess[a-z, ]*\)", lone), lone
    assert "(sizes from: index)" in out


def test_a_weight_layer_needs_layer_1s_plan(tmp_path: Path) -> None:
    script = load_path("vk_download_models_noplan", WORKERS / "download_models.py")
    choice = models.MODELS["2509"]
    make_snapshot(tmp_path / choice.snapshot.folder, choice.snapshot)
    result = download(
        "--worker", "edit", "--target", str(tmp_path), "--bake", "1", "--layer", f"2/{BAKE_LAYERS}"
    )
    assert result.returncode == 2
    assert f"run the first bake layer (--layer 1/{BAKE_LAYERS})" in result.stderr
    # A plan for another bake (here: another layer count) is refused, not half-followed.
    write(
        tmp_path / script.PLAN_FILE,
        json.dumps({"model": "2509", "mode": "lightning", "layers": 7, "groups": []}),
    )
    result = download(
        "--worker", "edit", "--target", str(tmp_path), "--bake", "1", "--layer", f"2/{BAKE_LAYERS}"
    )
    assert result.returncode == 2
    assert f"plans 2509 (lightning) in 7 layers, not 2509 (lightning) in {BAKE_LAYERS}" in (
        result.stderr
    )


# -- the entrypoints, run as the image's CMD -------------------------------------------------------


def small_png(width: int = 96, height: int = 64) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (40, 120, 200)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@dataclass
class Uploads:
    """A loopback server taking the workers' PUTs (presigned-URL uploads), as S3 would."""

    received: dict[str, tuple[str, bytes]]
    port: int = 0

    def target(self, name: str, content_type: str) -> dict[str, str]:
        url = f"http://127.0.0.1:{self.port}/bucket/{name}?X-Amz-Signature=abc"
        return {"put_url": url, "get_url": url, "content_type": content_type}


@pytest.fixture
def uploads() -> Iterator[Uploads]:
    state = Uploads(received={})

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return None

        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            path = self.path.split("?", 1)[0]
            state.received[path] = (self.headers.get("Content-Type", ""), body)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def native_job(stage: str, uploads: Uploads) -> dict[str, Any]:
    """A native job whose outputs are PUT to the loopback server (the job output holds URLs)."""
    if stage == "edit":
        return {
            "kind": "edit",
            "images": [{"base64": small_png()}],
            "prompt": "add a hat",
            "steps": 4,
            "seed": 3,
            "width": 160,
            "height": 128,
            "outputs": {"image": uploads.target("edit.png", "image/png")},
        }
    return {
        "kind": "animate",
        "image": {"base64": small_png()},
        "prompt": "a slow wave",
        "width": 128,
        "height": 128,
        "frames": 5,
        "fps": 8,
        "seed": 3,
        "outputs": {
            "video": uploads.target("clip.mp4", "video/mp4"),
            "last_frame": uploads.target("last.png", "image/png"),
        },
    }


def run_cmd(
    stage: str, job: dict[str, Any], timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    (cmd,) = [i for i in dockerfile(stage) if i.keyword == "CMD"]
    argv = json.loads(cmd.args)
    assert argv[0] == "python"
    test_input = json.dumps({"input": job})
    return run([sys.executable, *argv[1:], "--test_input", test_input], clean_env(**env), timeout)


def job_output(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The job's output from RunPod's "Job result:" line (it cuts lines over 4096 characters)."""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "completed successfully" in result.stdout
    line = next(x for x in result.stdout.splitlines() if "Job result: " in x)
    assert "TRUNCATED" not in line, "output too large to read back: use upload targets"
    document = ast.literal_eval(line.split("Job result: ", 1)[1])
    assert isinstance(document, dict)
    output = document["output"]
    assert isinstance(output, dict)
    return output


def job_log(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = [
        json.loads(x) for x in result.stderr.splitlines() if x.startswith('{"event":"videokit.job"')
    ]
    assert len(lines) == 1
    record = lines[0]
    assert isinstance(record, dict)
    return record


def check_uploaded(stage: str, output: dict[str, Any], uploads: Uploads) -> None:
    if stage == "edit":
        assert output["image"]["url"].startswith(f"http://127.0.0.1:{uploads.port}/bucket/edit.png")
        content_type, body = uploads.received["/bucket/edit.png"]
        assert content_type == "image/png" and body[:8] == b"\x89PNG\r\n\x1a\n"
        assert output["image"]["size_bytes"] == len(body)
        assert (output["width"], output["height"]) == (160, 128)
    else:
        content_type, video = uploads.received["/bucket/clip.mp4"]
        assert content_type == "video/mp4" and video[4:8] == b"ftyp"
        assert uploads.received["/bucket/last.png"][1][:4] == b"\x89PNG"
        assert output["video"]["size_bytes"] == len(video)
        assert (output["width"], output["height"], output["frames"]) == (128, 128, 5)


@pytest.mark.parametrize("stage", STAGES)
def test_the_cmd_runs_a_job_with_the_preview_engine(stage: str, uploads: Uploads) -> None:
    result = run_cmd(
        stage, native_job(stage, uploads), VIDEOKIT_ENGINE="preview",
        VIDEOKIT_ALLOW_PRIVATE_URLS="1",
    )  # fmt: skip
    check_uploaded(stage, job_output(result), uploads)
    record = job_log(result)
    assert (record["stage"], record["status"]) == (stage, "ok")
    assert record["model"].startswith("preview/")


def test_the_edit_cmd_answers_a_seed_003_job_inline() -> None:
    job = {"image_base64": small_png(), "prompt": "add a hat", "seed": 3}
    result = run_cmd("edit", job, VIDEOKIT_ENGINE="preview")
    output = job_output(result)
    assert output["success"] is True and output["seed"] == 3
    # Local test mode shows the output without its base64 data (see the next test).
    assert re.fullmatch(r"<\d+ base64 characters, not shown>", output["edited_image_base64"])
    assert job_log(result)["output_bytes"]["image"] > 0


@pytest.mark.parametrize("stage", STAGES)
def test_a_test_input_run_prints_no_output_urls_base64_or_payload(
    stage: str, uploads: Uploads
) -> None:
    """The runpod SDK's default level, DEBUG, prints the job's input ("Retrieved local job") and
    output ("Handler output") in full: the entrypoint sets INFO before importing the SDK, and
    the result it prints at INFO in this mode has base64 and URL queries elided."""
    job = native_job(stage, uploads)
    result = run_cmd(
        stage, job, VIDEOKIT_ENGINE="preview", VIDEOKIT_ALLOW_PRIVATE_URLS="1",
    )  # fmt: skip
    printed = result.stdout + result.stderr
    output = job_output(result)
    check_uploaded(stage, output, uploads)  # the job itself is untouched: files were uploaded
    image = job["images"][0]["base64"] if stage == "edit" else job["image"]["base64"]
    assert image[:40] not in printed  # the input's base64
    assert "X-Amz-Signature" not in printed  # the presigned URLs' signatures
    assert "Handler output" not in printed and "Retrieved local job" not in printed
    assert not [line for line in result.stdout.splitlines() if line.startswith("DEBUG")]
    media = output["image"] if stage == "edit" else output["video"]
    assert media["url"].endswith("?<query not shown>")

    # An inline result: the SDK would print the output's base64; it shows its length instead.
    inline = run_cmd(stage, {k: v for k, v in job.items() if k != "outputs"},
                     VIDEOKIT_ENGINE="preview")  # fmt: skip
    inline_output = job_output(inline)
    media = inline_output["image"] if stage == "edit" else inline_output["video"]
    assert re.fullmatch(r"<\d+ base64 characters, not shown>", media["base64"])
    assert media["size_bytes"] > 1000 and "base64 characters" in inline.stdout


def test_an_explicit_runpod_log_level_is_kept(uploads: Uploads) -> None:
    debug = run_cmd("edit", {"warmup": True}, VIDEOKIT_ENGINE="preview", RUNPOD_DEBUG_LEVEL="DEBUG")
    assert "Retrieved local job" in debug.stdout  # the SDK's own DEBUG line: the level was kept


@pytest.mark.parametrize("stage", STAGES)
def test_a_warmup_job_and_a_bad_job(stage: str) -> None:
    warm = job_output(run_cmd(stage, {"warmup": True}, VIDEOKIT_ENGINE="preview"))
    assert warm["warm"] is True
    bad = run_cmd(stage, {"prompt": "no image", "seed": 1}, VIDEOKIT_ENGINE="preview")
    assert bad.returncode == 1
    assert "invalid input" in bad.stdout
    assert job_log(bad)["status"] == "invalid_input"


@pytest.mark.parametrize("stage", STAGES)
def test_startup_errors_exit_2_with_one_message(stage: str, tmp_path: Path) -> None:
    unknown = run_cmd(stage, {"warmup": True}, VIDEOKIT_ENGINE="nope")
    assert unknown.returncode == 2
    assert f"videokit {stage} worker: unknown engine 'nope'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    torch = pytest.importorskip("torch")
    # One real-engine start per worker (each costs a torch import): the engines' own tests cover
    # both errors for both models; here, that either reaches the entrypoint as one message.
    if stage == "edit" or torch.cuda.is_available():
        empty = run_cmd(
            stage, {"warmup": True}, timeout=180, VIDEOKIT_ENGINE="diffusers",
            VIDEOKIT_MODEL_DIR=str(tmp_path), VIDEOKIT_DEVICE="cpu",
        )  # fmt: skip
        assert empty.returncode == 2, empty.stderr[-2000:]
        folder = models.MODELS[models.DEFAULT_MODEL[stage]].snapshot.folder
        assert folder in empty.stderr and "Traceback" not in empty.stderr
    else:
        # Without a GPU the real engine refuses to start (no silent CPU fallback).
        no_gpu = run_cmd(
            stage, {"warmup": True}, timeout=180, VIDEOKIT_ENGINE="diffusers",
            VIDEOKIT_MODEL_DIR=str(tmp_path),
        )  # fmt: skip
        assert no_gpu.returncode == 2 and "Traceback" not in no_gpu.stderr
        assert f"videokit {stage} worker: the default device is cuda, but torch sees no CUDA" in (
            no_gpu.stderr
        )


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_the_cmd_runs_a_job_with_the_tiny_engine(stage: str, uploads: Uploads) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    result = run_cmd(
        stage, native_job(stage, uploads), timeout=280, VIDEOKIT_ENGINE="tiny",
        VIDEOKIT_ALLOW_PRIVATE_URLS="1",
    )  # fmt: skip
    check_uploaded(stage, job_output(result), uploads)
    record = job_log(result)
    assert record["status"] == "ok" and record["model"].startswith("tiny-")


# -- CI -----------------------------------------------------------------------------------------------


def test_the_workflow_builds_both_dockerfiles_from_the_root() -> None:
    workflow = yaml.safe_load((ROOT / ".github/workflows/workers.yml").read_text())
    triggers = workflow.get("on", workflow.get(True))
    assert triggers["push"]["tags"] == ["v*"]
    assert triggers["workflow_dispatch"]["inputs"]["bake_models"]["options"] == ["0", "1"]
    assert workflow["permissions"]["packages"] == "write"
    build = workflow["jobs"]["build"]
    assert build["needs"] == "test"
    assert build["strategy"]["matrix"]["worker"] == list(STAGES)
    (push,) = [
        s for s in build["steps"] if str(s.get("uses", "")).startswith("docker/build-push-action")
    ]
    settings = push["with"]
    assert settings["context"] == "."
    assert settings["file"] == "workers/${{ matrix.worker }}/Dockerfile"
    for stage in STAGES:
        assert (ROOT / settings["file"].replace("${{ matrix.worker }}", stage)).is_file()
    assert "BAKE_MODELS=${{ env.BAKE }}" in settings["build-args"]
    assert settings["secrets"].strip().startswith("hf_token=")
    assert "ghcr.io" in json.dumps(build)
    test_step = " ".join(str(s.get("run", "")) for s in workflow["jobs"]["test"]["steps"])
    for name in re.findall(r"tests/\S+\.py", test_step):
        assert (ROOT / name).is_file(), name
