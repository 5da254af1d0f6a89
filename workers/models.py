"""The weights each worker needs: one table for downloads, verification and the engines.

Standard library only, so that the download script, the worker entrypoints (before any engine is
loaded) and the tests can all import it without torch, diffusers or huggingface_hub.

**Layout.** Every Hugging Face repository is stored under ``<model dir>/<org>/<name>/`` with the
repository's own paths (``snapshot_download(local_dir=...)``): a diffusers pipeline loads with
``from_pretrained(<model dir>/<org>/<name>)``, a LoRA file is ``<model dir>/<org>/<name>/<path>``::

    /models/Qwen/Qwen-Image-Edit-2509/model_index.json
    /models/Qwen/Qwen-Image-Edit-2509/transformer/diffusion_pytorch_model-00001-of-00005.safetensors
    /models/lightx2v/Qwen-Image-Lightning/Qwen-Image-Edit-2509/Qwen-Image-Edit-2509-Lightning-8steps-V1.0-bf16.safetensors

The model directory is ``VIDEOKIT_MODEL_DIR``; when it is unset the worker uses the first of
:data:`MODEL_DIR_CANDIDATES` that holds the chosen model: ``/models`` (baked into the image with
``BAKE_MODELS=1``), then ``/runpod-volume/models`` (a RunPod network volume).

**Verification** needs no network and no hashes: ``model_index.json`` is read, every component it
names must be a folder, every weight folder must hold its ``config.json`` and complete weights (all
shards listed by each ``*.safetensors.index.json``, together at least the index's ``total_size``;
or one non-empty ``.safetensors`` file), the exact files of the table must exist and be non-empty,
and no interrupted download (``*.incomplete``) may be left behind.

Model choices are keyed by the names in :data:`MODELS` (``VIDEOKIT_QWEN_MODEL`` for the edit
worker, ``VIDEOKIT_WAN_MODEL`` for the animate worker).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

__all__ = [
    "BAKED_MODEL_DIR",
    "DEFAULT_MODEL",
    "MODELS",
    "MODEL_DIR_CANDIDATES",
    "MODEL_ENV",
    "VOLUME_MODEL_DIR",
    "LoraFile",
    "ModelChoice",
    "ModelsMissingError",
    "Repo",
    "choose",
    "prepare_worker_env",
    "resolve_model_dir",
    "verify",
]

Stage = Literal["edit", "animate"]

BAKED_MODEL_DIR = "/models"
VOLUME_MODEL_DIR = "/runpod-volume/models"
MODEL_DIR_CANDIDATES = (BAKED_MODEL_DIR, VOLUME_MODEL_DIR)

#: The environment variable that picks each worker's model.
MODEL_ENV: dict[Stage, str] = {"edit": "VIDEOKIT_QWEN_MODEL", "animate": "VIDEOKIT_WAN_MODEL"}

# Diffusers pipeline repositories: the index, every component's JSON (configs, tokenizer and
# processor files), safetensors weights, and the tokenizer vocabularies. No .bin/.pth/.pt
# duplicates, no example images. (fnmatch: "*" also matches "/".)
_DIFFUSERS_PATTERNS = (
    "model_index.json",
    "*/*.json",
    "*/*.safetensors",
    "*/*.txt",
    "*/*.model",
    "*/*.jinja",
)


@dataclass(frozen=True)
class Repo:
    """One Hugging Face repository, or the part of it a worker needs."""

    repo_id: str
    allow_patterns: tuple[str, ...]
    #: Files (repository paths) that must exist and be non-empty.
    files: tuple[str, ...] = ()
    #: Diffusers folders with weights: each needs config.json and complete safetensors.
    weight_components: tuple[str, ...] = ()
    #: Whether model_index.json is read and every component it names must be a folder.
    pipeline: bool = False
    #: A commit hash to pin; None downloads the default branch ("main").
    revision: str | None = None
    approx_gb: float = 0.0

    @property
    def local_dir(self) -> PurePosixPath:
        """Where the repository goes, relative to the model directory."""
        return PurePosixPath(self.repo_id)


@dataclass(frozen=True)
class LoraFile:
    """A LoRA the engine loads, and the pipeline component it goes into."""

    name: str
    repo_id: str
    filename: str
    component: str = "transformer"

    def path(self, model_dir: Path | str) -> Path:
        return Path(model_dir) / self.repo_id / self.filename


@dataclass(frozen=True)
class ModelChoice:
    key: str
    stage: Stage
    description: str
    pipeline_repo: Repo
    lora_repos: tuple[Repo, ...] = ()
    loras: tuple[LoraFile, ...] = ()
    #: Sampler defaults the LoRAs were distilled for (documentation for the engines and users).
    steps: int | None = None
    #: VRAM (GB) to keep every weight resident in bf16, without offloading (sizing guide).
    vram_gb_resident: int = 0
    notes: str = ""
    aliases: tuple[str, ...] = field(default=())

    @property
    def repos(self) -> tuple[Repo, ...]:
        return (self.pipeline_repo, *self.lora_repos)

    @property
    def approx_gb(self) -> float:
        return round(sum(repo.approx_gb for repo in self.repos), 1)

    def pipeline_path(self, model_dir: Path | str) -> Path:
        """The folder to pass to ``DiffusionPipeline.from_pretrained``."""
        return Path(model_dir) / self.pipeline_repo.repo_id


def _qwen_edit(key: str, repo_id: str, lora_repo: str, lora_file: str, steps: int) -> ModelChoice:
    return ModelChoice(
        key=key,
        stage="edit",
        description=f"{repo_id} (QwenImageEditPlusPipeline) + Lightning {steps}-step LoRA",
        pipeline_repo=Repo(
            repo_id=repo_id,
            allow_patterns=_DIFFUSERS_PATTERNS,
            files=("model_index.json", "scheduler/scheduler_config.json"),
            weight_components=("transformer", "text_encoder", "vae"),
            pipeline=True,
            approx_gb=57.7,
        ),
        lora_repos=(
            Repo(
                repo_id=lora_repo, allow_patterns=(lora_file,), files=(lora_file,), approx_gb=0.85
            ),
        ),
        loras=(LoraFile(name="lightning", repo_id=lora_repo, filename=lora_file),),
        steps=steps,
        vram_gb_resident=62,
        notes="transformer ~41 GB + Qwen2.5-VL encoder ~16.6 GB in bf16",
    )


_WAN_LIGHTNING = "lightx2v/Wan2.2-Lightning"
_WAN_LIGHTNING_DIR = "Wan2.2-I2V-A14B-4steps-lora-rank64-Seko-V1"

#: Every model a worker can run, by key.
MODELS: dict[str, ModelChoice] = {
    choice.key: choice
    for choice in (
        _qwen_edit(
            "qwen-image-edit-2509",
            "Qwen/Qwen-Image-Edit-2509",
            "lightx2v/Qwen-Image-Lightning",
            "Qwen-Image-Edit-2509/Qwen-Image-Edit-2509-Lightning-8steps-V1.0-bf16.safetensors",
            steps=8,
        ),
        _qwen_edit(
            "qwen-image-edit-2511",
            "Qwen/Qwen-Image-Edit-2511",
            "lightx2v/Qwen-Image-Edit-2511-Lightning",
            "Qwen-Image-Edit-2511-Lightning-4steps-V1.0-bf16.safetensors",
            steps=4,
        ),
        ModelChoice(
            key="wan2.2-i2v-a14b",
            stage="animate",
            description=(
                "Wan-AI/Wan2.2-I2V-A14B-Diffusers (two experts) + LightX2V 4-step LoRAs "
                "(high noise -> transformer, low noise -> transformer_2)"
            ),
            pipeline_repo=Repo(
                repo_id="Wan-AI/Wan2.2-I2V-A14B-Diffusers",
                allow_patterns=_DIFFUSERS_PATTERNS,
                files=("model_index.json", "scheduler/scheduler_config.json"),
                weight_components=("transformer", "transformer_2", "text_encoder", "vae"),
                pipeline=True,
                approx_gb=69.0,
            ),
            lora_repos=(
                Repo(
                    repo_id=_WAN_LIGHTNING,
                    allow_patterns=(
                        f"{_WAN_LIGHTNING_DIR}/high_noise_model.safetensors",
                        f"{_WAN_LIGHTNING_DIR}/low_noise_model.safetensors",
                    ),
                    files=(
                        f"{_WAN_LIGHTNING_DIR}/high_noise_model.safetensors",
                        f"{_WAN_LIGHTNING_DIR}/low_noise_model.safetensors",
                    ),
                    approx_gb=1.2,
                ),
            ),
            loras=(
                LoraFile(
                    name="lightning_high_noise",
                    repo_id=_WAN_LIGHTNING,
                    filename=f"{_WAN_LIGHTNING_DIR}/high_noise_model.safetensors",
                    component="transformer",
                ),
                LoraFile(
                    name="lightning_low_noise",
                    repo_id=_WAN_LIGHTNING,
                    filename=f"{_WAN_LIGHTNING_DIR}/low_noise_model.safetensors",
                    component="transformer_2",
                ),
            ),
            steps=4,
            vram_gb_resident=80,
            notes="two 14B experts ~28 GB each + UMT5 ~11 GB in bf16; one expert runs at a time",
        ),
        ModelChoice(
            key="wan2.2-ti2v-5b",
            stage="animate",
            description="Wan-AI/Wan2.2-TI2V-5B-Diffusers (one 5B transformer, no LoRA)",
            pipeline_repo=Repo(
                repo_id="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
                allow_patterns=_DIFFUSERS_PATTERNS,
                files=("model_index.json", "scheduler/scheduler_config.json"),
                weight_components=("transformer", "text_encoder", "vae"),
                pipeline=True,
                approx_gb=24.0,
            ),
            vram_gb_resident=32,
            notes="no distilled LoRA: use ~30-50 steps with guidance",
        ),
    )
}

#: The model a worker runs when its variable is unset.
DEFAULT_MODEL: dict[Stage, str] = {"edit": "qwen-image-edit-2509", "animate": "wan2.2-i2v-a14b"}


class ModelsMissingError(Exception):
    """The chosen model is not (completely) in the model directory; the message lists what."""


def choose(stage: Stage, key: str | None) -> ModelChoice:
    """The model for ``stage`` called ``key`` (None or empty: the stage's default)."""
    key = (key or "").strip() or DEFAULT_MODEL[stage]
    choice = MODELS.get(key)
    if choice is None or choice.stage != stage:
        known = ", ".join(sorted(k for k, c in MODELS.items() if c.stage == stage))
        raise KeyError(f"unknown {stage} model {key!r} (known: {known})")
    return choice


def verify(choice: ModelChoice, model_dir: Path | str) -> list[str]:
    """What is missing or incomplete for ``choice`` under ``model_dir`` (empty: all there).

    Each entry is one line naming a path relative to ``model_dir``.
    """
    root = Path(model_dir)
    problems: list[str] = []
    for repo in choice.repos:
        problems.extend(_verify_repo(root, repo))
    return problems


def _verify_repo(root: Path, repo: Repo) -> list[str]:
    base = root / repo.repo_id
    rel = PurePosixPath(repo.repo_id)
    if not base.is_dir():
        return [f"missing: {rel}/ (the whole repository)"]
    problems: list[str] = []
    for name in repo.files:
        problems.extend(_nonempty_file(base / name, rel / name))
    components = list(repo.weight_components)
    if repo.pipeline:
        components += [c for c in _pipeline_components(base, rel, problems) if c not in components]
    for component in components:
        folder = base / component
        if not folder.is_dir():
            problems.append(f"missing: {rel / component}/")
        elif component in repo.weight_components:
            problems.extend(_nonempty_file(folder / "config.json", rel / component / "config.json"))
            problems.extend(_verify_weights(folder, rel / component))
        elif not any(folder.iterdir()):
            problems.append(f"empty: {rel / component}/")
    incomplete = base / ".cache" / "huggingface" / "download"
    if incomplete.is_dir():
        for partial in sorted(incomplete.rglob("*.incomplete")):
            problems.append(
                f"interrupted download: {rel / partial.relative_to(base)} (run the download again)"
            )
    return problems


def _pipeline_components(base: Path, rel: PurePosixPath, problems: list[str]) -> list[str]:
    index = base / "model_index.json"
    if not index.is_file():
        return []  # already reported as a missing file
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        problems.append(f"unreadable: {rel}/model_index.json (not valid JSON)")
        return []
    if not isinstance(data, dict):
        problems.append(f"unreadable: {rel}/model_index.json (not a JSON object)")
        return []
    # Components are [library, class] pairs; [null, null] marks an optional one that is absent.
    return sorted(
        name
        for name, value in data.items()
        if not name.startswith("_")
        and isinstance(value, list)
        and len(value) == 2
        and value[0] is not None
        and value[1] is not None
    )


def _nonempty_file(path: Path, rel: PurePosixPath) -> list[str]:
    if not path.is_file():
        return [f"missing: {rel}"]
    if path.stat().st_size == 0:
        return [f"empty: {rel}"]
    return []


def _verify_weights(folder: Path, rel: PurePosixPath) -> list[str]:
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    if not indexes:
        singles = [p for p in folder.glob("*.safetensors") if p.stat().st_size > 0]
        return [] if singles else [f"missing: {rel}/*.safetensors (no weights)"]
    problems: list[str] = []
    for index in indexes:
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
            shards = sorted(set(data["weight_map"].values()))
            total = int(data.get("metadata", {}).get("total_size", 0))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            problems.append(f"unreadable: {rel / index.name} (not a safetensors index)")
            continue
        size = 0
        for shard in shards:
            path = folder / shard
            if not path.is_file():
                problems.append(f"missing: {rel / shard}")
            else:
                size += path.stat().st_size
        if not problems and size < total:
            problems.append(
                f"truncated: {rel}/ shards hold {size} bytes, {index.name} lists {total}"
            )
    return problems


def resolve_model_dir(
    choice: ModelChoice, env: Mapping[str, str], candidates: Iterable[str] = MODEL_DIR_CANDIDATES
) -> tuple[Path, list[str]]:
    """The model directory to use, and what is missing there.

    ``VIDEOKIT_MODEL_DIR`` when set; otherwise the first candidate holding the whole model, or, if
    none does, the first candidate that exists (else the first), with its problems.
    """
    explicit = env.get("VIDEOKIT_MODEL_DIR", "").strip()
    if explicit:
        path = Path(explicit)
        return path, verify(choice, path)
    options = [Path(c) for c in candidates]
    for path in options:
        if path.is_dir() and not verify(choice, path):
            return path, []
    fallback = next((p for p in options if p.is_dir()), options[0])
    return fallback, verify(choice, fallback)


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def prepare_worker_env(
    stage: Stage,
    env: MutableMapping[str, str],
    *,
    candidates: Iterable[str] = MODEL_DIR_CANDIDATES,
    warn: Callable[[str], None] | None = None,
) -> str | None:
    """Before a worker loads its engine: pick the model directory and check the weights are there.

    Only for ``VIDEOKIT_ENGINE=diffusers`` (other engines need no files); returns the model
    directory it set in ``env`` (``VIDEOKIT_MODEL_DIR``), or None. Missing files raise
    :class:`ModelsMissingError` listing them, so a worker with no weights fails at start with a
    readable message instead of a stack trace from ``from_pretrained`` (the image runs with
    ``HF_HUB_OFFLINE=1``: nothing is downloaded at cold start). With ``VIDEOKIT_ALLOW_HUB=1`` the
    engine may fetch what is missing, so the problems are only printed (``warn``, default stderr).
    A model name not in :data:`MODELS` is left to the engine to judge.
    """
    say = warn or _to_stderr

    if (env.get("VIDEOKIT_ENGINE", "").strip() or "preview") != "diffusers":
        return None
    try:
        choice = choose(stage, env.get(MODEL_ENV[stage]))
    except KeyError as exc:
        say(f"videokit worker: {exc.args[0]}; not checking its files (the engine decides)")
        return None
    model_dir, problems = resolve_model_dir(choice, env, candidates)
    env["VIDEOKIT_MODEL_DIR"] = str(model_dir)
    if not problems:
        say(f"videokit worker: {choice.key} found complete in {model_dir}")
        return str(model_dir)
    shown = problems[:20]
    more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
    message = (
        f"{choice.key} is incomplete in {model_dir} ({len(problems)} problem(s)):\n  "
        + "\n  ".join(shown)
        + more
        + "\nhint: bake the weights (docker build --build-arg BAKE_MODELS=1), or fill the network"
        f" volume: python workers/download_models.py --worker {stage} --model {choice.key}"
        f" --target {model_dir}; set VIDEOKIT_MODEL_DIR if they are elsewhere"
    )
    if _truthy(env.get("VIDEOKIT_ALLOW_HUB")):
        say(f"videokit worker: {message}\n(VIDEOKIT_ALLOW_HUB=1: the engine may download them)")
        return str(model_dir)
    raise ModelsMissingError(message)
