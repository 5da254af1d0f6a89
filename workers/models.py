"""The weights each worker needs, where they come from and where they go: one table, MODELS.

Standard library only, so the download script can run in an image layer *before* videokit is
installed (a code change then never re-downloads 60 GB), on any pod, and in tests.

**The layout is the engines'.** ``videokit/worker/qwen.py`` and ``videokit/worker/wan.py`` load
from a *model directory* (``VIDEOKIT_MODEL_DIR``; by default the first complete one of
``/models/<sub>``, baked into the image, and ``/runpod-volume/models/<sub>``, a network volume,
with ``<sub>`` = ``qwen-edit`` or ``wan``) laid out as::

    <model dir>/Qwen-Image-Edit-2509/model_index.json, transformer/, text_encoder/, ...   (edit)
    <model dir>/loras/Qwen-Image-Edit-2509-Lightning-{4,8}steps-V1.0-bf16.safetensors
    <model dir>/Wan2.2-I2V-A14B-Diffusers/model_index.json, transformer/, transformer_2/, ...
    <model dir>/loras/wan2.2_i2v_lightx2v_4steps_lora_v1_{high,low}_noise.safetensors  (animate)

This table says which Hugging Face repository and file each of those comes from; the tests check
that a directory laid out from it satisfies each engine's own file check, and that repositories,
folders and LoRA names agree with the engines' tables.

**Verification** (:func:`verify`) needs no network and no hashes: ``model_index.json`` is read and
every component it names must be a non-empty folder; every weight folder must hold ``config.json``
and complete weights (all shards named by each ``*.safetensors.index.json``, together at least
its ``total_size``; or one non-empty ``.safetensors``); every listed file must exist and be
non-empty; no interrupted download (``*.incomplete``) may be left behind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

__all__ = [
    "BAKED_ROOT",
    "DEFAULT_MODEL",
    "MODELS",
    "MODEL_ENV",
    "MODEL_SUBDIR",
    "MODE_ENV",
    "VOLUME_ROOT",
    "ModelChoice",
    "RepoFile",
    "Snapshot",
    "choose",
    "default_model_dirs",
    "verify",
]

Stage = Literal["edit", "animate"]
Mode = Literal["lightning", "standard"]

BAKED_ROOT = "/models"
VOLUME_ROOT = "/runpod-volume/models"
#: Each worker's model directory is ``<root>/<subdir>`` (the engines' DEFAULT_MODEL_DIRS).
MODEL_SUBDIR: dict[Stage, str] = {"edit": "qwen-edit", "animate": "wan"}
#: The variables that pick each worker's model and mode (read by the engines).
MODEL_ENV: dict[Stage, str] = {"edit": "VIDEOKIT_QWEN_MODEL", "animate": "VIDEOKIT_WAN_MODEL"}
MODE_ENV: dict[Stage, str] = {"edit": "VIDEOKIT_QWEN_MODE", "animate": "VIDEOKIT_WAN_MODE"}

# Diffusers snapshots: the index, every component's JSON (configs, tokenizer and processor
# files), safetensors weights, tokenizer vocabularies. No .bin/.pth duplicates, no sample media.
# (huggingface_hub matches with fnmatch, where "*" also matches "/".)
_DIFFUSERS_PATTERNS = (
    "model_index.json",
    "*/*.json",
    "*/*.safetensors",
    "*/*.txt",
    "*/*.model",
    "*/*.jinja",
)


@dataclass(frozen=True)
class Snapshot:
    """A diffusers pipeline repository, downloaded to ``<model dir>/<folder>``."""

    repo_id: str
    folder: str
    weight_components: tuple[str, ...]
    files: tuple[str, ...] = ("model_index.json", "scheduler/scheduler_config.json")
    allow_patterns: tuple[str, ...] = _DIFFUSERS_PATTERNS
    #: A commit to pin; None = the default branch.
    revision: str | None = None
    approx_gb: float = 0.0


@dataclass(frozen=True)
class RepoFile:
    """One file of a repository, stored at ``<model dir>/<local_path>``."""

    repo_id: str
    repo_path: str
    local_path: str
    revision: str | None = None
    approx_gb: float = 0.0


@dataclass(frozen=True)
class ModelChoice:
    key: str  # the engines' key: VIDEOKIT_QWEN_MODEL / VIDEOKIT_WAN_MODEL
    stage: Stage
    description: str
    snapshot: Snapshot
    #: Extra files per mode (the Lightning LoRAs); a mode not listed is not supported.
    mode_files: dict[str, tuple[RepoFile, ...]]
    #: GPU memory (GB) to keep every weight resident in bf16 (sizing; videokit.deploy warns).
    vram_gb_resident: int

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(self.mode_files)

    @property
    def default_mode(self) -> str:
        return "lightning" if "lightning" in self.mode_files else "standard"

    def files(self, mode: str) -> tuple[RepoFile, ...]:
        return self.mode_files[mode]

    def approx_gb(self, mode: str) -> float:
        return round(self.snapshot.approx_gb + sum(f.approx_gb for f in self.files(mode)), 1)


def _qwen(
    key: str,
    *,
    revision: str,
    lora_repo: str,
    lora_folder: str | None,
    lora_revision: str,
) -> ModelChoice:
    folder = f"Qwen-Image-Edit-{key}"
    loras = tuple(
        RepoFile(
            repo_id=lora_repo,
            repo_path=f"{lora_folder}/{name}" if lora_folder else name,
            local_path=f"loras/{name}",
            revision=lora_revision,
            # 849,608,296 bytes: the Qwen-Image-Edit 4-step bf16 LoRA at the 2509 LoRA commit
            # (public size listing); the 2509 and 2511 LoRAs have its shape (~810 MiB each).
            approx_gb=0.85,
        )
        for name in (
            f"Qwen-Image-Edit-{key}-Lightning-4steps-V1.0-bf16.safetensors",
            f"Qwen-Image-Edit-{key}-Lightning-8steps-V1.0-bf16.safetensors",
        )
    )
    return ModelChoice(
        key=key,
        stage="edit",
        description=f"Qwen/{folder} (QwenImageEditPlusPipeline); lightning: 4+8-step LoRAs",
        snapshot=Snapshot(
            repo_id=f"Qwen/{folder}",
            folder=folder,
            weight_components=("transformer", "text_encoder", "vae"),
            revision=revision,
            # bf16: transformer 40.86 GB (5 shards) + Qwen2.5-VL 16.58 GB (4) + VAE 0.25 GB, the
            # file sizes listed for 2511 at its pinned commit; 2509 has the same architecture.
            approx_gb=57.7,
        ),
        mode_files={"lightning": loras, "standard": ()},
        vram_gb_resident=62,
    )


_WAN_LORA_REPO = "Comfy-Org/Wan_2.2_ComfyUI_Repackaged"
# Commit pinned in public code (code search: a download script fetching both
# split_files/loras/wan2.2_i2v_lightx2v_4steps_lora_v1_{high,low}_noise files at this commit,
# "Comfy-Org/Wan_2.2_ComfyUI_Repackaged, 2026-09-23").
_WAN_LORA_REVISION = "ee6f4a40737a995bf5818954cfce6d59443b0f04"

#: Every model a worker can run, by the engines' key.
MODELS: dict[str, ModelChoice] = {
    choice.key: choice
    for choice in (
        _qwen(
            "2509",
            # Commits as public code pins or loads them (code search, e.g. the snapshot path in
            # sgl-project/sglang's python/sglang/multimodal_gen/test/server/musa/
            # testcase_configs_musa.py, and a `hf_revision=` of lightx2v/Qwen-Image-Lightning
            # whose snapshot holds Qwen-Image-Edit-2509/...-Lightning-8steps-V1.0-bf16).
            revision="d3968ef930e841f4c73640fb8afa3b306a78167e",
            lora_repo="lightx2v/Qwen-Image-Lightning",
            lora_folder="Qwen-Image-Edit-2509",
            lora_revision="e74da8d4e71a54b341de86aa9f8d2509165aa513",
        ),
        _qwen(
            "2511",
            # Commits pinned in public code (code search: several projects pin this pair, one
            # listing both the 4- and 8-step bf16 LoRAs at that LoRA commit).
            revision="6f3ccc0b56e431dc6a0c2b2039706d7d26f22cb9",
            lora_repo="lightx2v/Qwen-Image-Edit-2511-Lightning",
            lora_folder=None,
            lora_revision="d74eba145674fd7e31b949324e148e21e7118abd",
        ),
        ModelChoice(
            key="a14b",
            stage="animate",
            description=(
                "Wan-AI/Wan2.2-I2V-A14B-Diffusers (two experts); lightning: LightX2V 4-step"
                " LoRAs (high noise -> transformer, low noise -> transformer_2)"
            ),
            snapshot=Snapshot(
                repo_id="Wan-AI/Wan2.2-I2V-A14B-Diffusers",
                folder="Wan2.2-I2V-A14B-Diffusers",
                weight_components=("transformer", "transformer_2", "text_encoder", "vae"),
                # Commit pinned in public code (code search: the snapshot path
                # models--Wan-AI--Wan2.2-I2V-A14B-Diffusers/snapshots/596658fd..., several
                # projects, e.g. vllm-omni serving notes).
                revision="596658fd9ca6b7b71d5057529bbf319ecbc61d74",
                # The experts are stored in fp32: 2 x 57.15 GB (12 shards each) + UMT5 bf16
                # 11.36 GB + VAE 0.51 GB = 126.2 GB (public byte listings of the repo and of its
                # T2V twin); loaded in bf16 they take half that (vram_gb_resident).
                approx_gb=126.2,
            ),
            mode_files={
                "lightning": tuple(
                    RepoFile(
                        repo_id=_WAN_LORA_REPO,
                        repo_path=f"split_files/loras/{name}",
                        local_path=f"loras/{name}",
                        revision=_WAN_LORA_REVISION,
                        approx_gb=1.21,  # >= 1,209,814,656 bytes each (public size manifests)
                    )
                    for name in (
                        "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors",
                        "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors",
                    )
                ),
                "standard": (),
            },
            vram_gb_resident=80,
        ),
        ModelChoice(
            key="ti2v-5b",
            stage="animate",
            description="Wan-AI/Wan2.2-TI2V-5B-Diffusers (one 5B transformer; standard mode)",
            snapshot=Snapshot(
                repo_id="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
                folder="Wan2.2-TI2V-5B-Diffusers",
                weight_components=("transformer", "text_encoder", "vae"),
                # Commit pinned in public code (code search: the snapshot path
                # models--Wan-AI--Wan2.2-TI2V-5B-Diffusers/snapshots/b8fff731..., many projects).
                revision="b8fff7315c768468a5333511427288870b2e9635",
                approx_gb=24.0,  # an estimate: no public byte listing of this repository found
            ),
            mode_files={"standard": ()},
            vram_gb_resident=32,
        ),
    )
}

#: The model each worker runs when its variable is unset (the engines' defaults).
DEFAULT_MODEL: dict[Stage, str] = {"edit": "2509", "animate": "a14b"}


def default_model_dirs(stage: Stage) -> tuple[str, str]:
    """Where the engines look when ``VIDEOKIT_MODEL_DIR`` is unset: baked, then the volume."""
    sub = MODEL_SUBDIR[stage]
    return (f"{BAKED_ROOT}/{sub}", f"{VOLUME_ROOT}/{sub}")


def choose(stage: Stage, key: str | None) -> ModelChoice:
    """The model for ``stage`` called ``key`` (None or empty: the stage's default)."""
    key = (key or "").strip() or DEFAULT_MODEL[stage]
    choice = MODELS.get(key)
    if choice is None or choice.stage != stage:
        known = ", ".join(sorted(k for k, c in MODELS.items() if c.stage == stage))
        raise KeyError(f"unknown {stage} model {key!r} (known: {known})")
    return choice


def verify(
    choice: ModelChoice, mode: str, model_dir: Path | str, *, snapshot: bool = True
) -> list[str]:
    """What is missing or incomplete for ``choice`` in ``mode`` under ``model_dir`` ([]: none).

    Each entry is one line naming a path relative to ``model_dir``. ``snapshot=False`` checks
    only the mode's files (the LoRAs): an image that bakes them alone (``--bake loras``) beside
    a snapshot from elsewhere (a RunPod cached model).
    """
    root = Path(model_dir)
    problems = _verify_snapshot(root, choice.snapshot) if snapshot else []
    for item in choice.files(mode):
        problems.extend(_nonempty_file(root / item.local_path, PurePosixPath(item.local_path)))
    for partial in sorted(root.rglob("*.incomplete")) if root.is_dir() else ():
        problems.append(
            f"interrupted download: {partial.relative_to(root).as_posix()} (download again)"
        )
    return problems


def _verify_snapshot(root: Path, snapshot: Snapshot) -> list[str]:
    base = root / snapshot.folder
    rel = PurePosixPath(snapshot.folder)
    if not base.is_dir():
        return [f"missing: {rel}/ (all of {snapshot.repo_id})"]
    problems: list[str] = []
    for name in snapshot.files:
        problems.extend(_nonempty_file(base / name, rel / name))
    components = list(snapshot.weight_components)
    components += [c for c in _index_components(base, rel, problems) if c not in components]
    for component in components:
        folder = base / component
        if not folder.is_dir():
            problems.append(f"missing: {rel / component}/")
        elif component in snapshot.weight_components:
            problems.extend(_nonempty_file(folder / "config.json", rel / component / "config.json"))
            problems.extend(_verify_weights(folder, rel / component))
        elif not any(folder.iterdir()):
            problems.append(f"empty: {rel / component}/")
    return problems


def _index_components(base: Path, rel: PurePosixPath, problems: list[str]) -> list[str]:
    """The components ``model_index.json`` names ([library, class] pairs; [null, null] = none)."""
    index = base / "model_index.json"
    if not index.is_file():
        return []  # reported as a missing file
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        problems.append(f"unreadable: {rel}/model_index.json (not valid JSON)")
        return []
    if not isinstance(data, dict):
        problems.append(f"unreadable: {rel}/model_index.json (not a JSON object)")
        return []
    return sorted(
        name
        for name, value in data.items()
        if not name.startswith("_")
        and isinstance(value, list)
        and len(value) == 2
        and None not in value
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
        if any(p.stat().st_size > 0 for p in folder.glob("*.safetensors")):
            return []
        return [f"missing: {rel}/*.safetensors (no weights)"]
    problems: list[str] = []
    for index in indexes:
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
            shards = sorted(set(data["weight_map"].values()))
            total = int(data.get("metadata", {}).get("total_size", 0))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            problems.append(f"unreadable: {rel / index.name} (not a safetensors index)")
            continue
        size, absent = 0, []
        for shard in shards:
            path = folder / shard
            if path.is_file():
                size += path.stat().st_size
            else:
                absent.append(f"missing: {rel / shard}")
        problems.extend(absent)
        if not absent and size < total:
            problems.append(
                f"truncated: {rel}/ shards hold {size} bytes, {index.name} lists {total}"
            )
    return problems
