"""``videokit.worker.model_cache``: a real Hugging Face cache tree in tmp_path, laid out as RunPod's
cached models are (serverless/endpoints/model-caching: ``models--Org--Name/refs/main`` holds a
commit, ``snapshots/<commit>/`` the files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from videokit.worker.model_cache import (
    CACHE_ROOT_ENV,
    RUNPOD_HF_CACHE,
    hf_cache_roots,
    hf_cache_snapshot,
    repo_folder_name,
)

REPO = "Wan-AI/Wan2.2-I2V-A14B-Diffusers"
MAIN = "596658fd9ca6b7b71d5057529bbf319ecbc61d74"
OLD = "0" * 39 + "1"


def snapshot(hub: Path, repo: str, commit: str, *, ref: str | None = "main") -> Path:
    """One snapshot of ``repo`` in the hub folder ``hub`` (files as symlinks into blobs/, as
    huggingface_hub writes them), and ``refs/<ref>`` naming it."""
    root = hub / repo_folder_name(repo)
    folder = root / "snapshots" / commit
    (folder / "transformer").mkdir(parents=True)
    blob = root / "blobs" / f"blob-{commit}"
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_text("{}")
    (folder / "model_index.json").symlink_to(blob)
    if ref is not None:
        (root / "refs").mkdir(exist_ok=True)
        (root / "refs" / ref).write_text(commit + "\n")  # huggingface_hub writes no newline
    return folder


def test_the_folder_name_follows_the_cache_convention() -> None:
    assert repo_folder_name(REPO) == "models--Wan-AI--Wan2.2-I2V-A14B-Diffusers"
    assert repo_folder_name("Qwen/Qwen-Image-Edit-2509") == "models--Qwen--Qwen-Image-Edit-2509"
    for bad in ("Qwen", "a/b/c", "../x", "a/..", "org/", "https://huggingface.co/a/b", "a/b c"):
        with pytest.raises(ValueError, match="not a Hugging Face repository id"):
            repo_folder_name(bad)


def test_refs_main_names_the_snapshot(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    old = snapshot(hub, REPO, OLD, ref=None)
    current = snapshot(hub, REPO, MAIN)
    env = {CACHE_ROOT_ENV: str(hub)}
    assert hf_cache_snapshot(REPO, env=env) == current
    assert hf_cache_snapshot(REPO, env=env, revision="main") == current
    assert (current / "model_index.json").read_text() == "{}"
    # A commit: its own snapshot, present or not; refs are not consulted.
    assert hf_cache_snapshot(REPO, env=env, revision=OLD) == old
    assert hf_cache_snapshot(REPO, env=env, revision="f" * 40) is None
    # Another branch: only through its ref.
    assert hf_cache_snapshot(REPO, env=env, revision="v1.0") is None
    (hub / repo_folder_name(REPO) / "refs" / "v1.0").write_text(OLD)
    assert hf_cache_snapshot(REPO, env=env, revision="v1.0") == old


def test_without_refs_main_the_only_snapshot_is_taken_never_a_guess(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    only = snapshot(hub, REPO, MAIN, ref=None)
    env = {CACHE_ROOT_ENV: str(hub)}
    assert hf_cache_snapshot(REPO, env=env) == only
    snapshot(hub, REPO, OLD, ref=None)
    assert hf_cache_snapshot(REPO, env=env) is None  # two, and nothing says which
    # A ref to a missing snapshot with an explicit revision finds nothing.
    (hub / repo_folder_name(REPO) / "refs").mkdir()
    (hub / repo_folder_name(REPO) / "refs" / "dev").write_text("e" * 40)
    assert hf_cache_snapshot(REPO, env=env, revision="dev") is None


def test_a_broken_ref_is_ignored(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    only = snapshot(hub, REPO, MAIN, ref=None)
    (hub / repo_folder_name(REPO) / "refs").mkdir()
    (hub / repo_folder_name(REPO) / "refs" / "main").write_text("not a commit")
    assert hf_cache_snapshot(REPO, env={CACHE_ROOT_ENV: str(hub)}) == only


def test_absent_repositories_and_empty_caches_are_none(tmp_path: Path) -> None:
    env = {CACHE_ROOT_ENV: str(tmp_path / "nothing"), "HF_HUB_CACHE": str(tmp_path / "empty")}
    (tmp_path / "empty").mkdir()
    assert hf_cache_snapshot(REPO, env=env) is None
    (tmp_path / "empty" / repo_folder_name(REPO) / "snapshots").mkdir(parents=True)
    assert hf_cache_snapshot(REPO, env=env) is None
    # A file where the snapshot folder should be is not a snapshot.
    (tmp_path / "empty" / repo_folder_name(REPO) / "snapshots" / MAIN).write_text("")
    assert hf_cache_snapshot(REPO, env=env, revision=MAIN) is None


def test_bad_revisions_are_refused(tmp_path: Path) -> None:
    for bad in ("../main", "/etc", "a//b", "-x", ""):
        with pytest.raises(ValueError, match="is not a revision"):
            hf_cache_snapshot(REPO, env={CACHE_ROOT_ENV: str(tmp_path)}, revision=bad)


def test_the_roots_are_runpods_then_the_hugging_face_conventions(tmp_path: Path) -> None:
    assert hf_cache_roots({}) == [Path(RUNPOD_HF_CACHE)]
    assert hf_cache_roots({"HOME": "/home/u"}) == [
        Path(RUNPOD_HF_CACHE),
        Path("/home/u/.cache/huggingface/hub"),
    ]
    assert hf_cache_roots({"HOME": "/home/u", "XDG_CACHE_HOME": "/xdg"})[1] == Path(
        "/xdg/huggingface/hub"
    )
    assert hf_cache_roots({"XDG_CACHE_HOME": "/xdg", "HF_HOME": "/hf"})[1] == Path("/hf/hub")
    assert hf_cache_roots({"HF_HOME": "/hf", "HF_HUB_CACHE": "/cache"})[1] == Path("/cache")
    # The override replaces RunPod's location; a duplicate is searched once.
    assert hf_cache_roots({CACHE_ROOT_ENV: "/cache", "HF_HUB_CACHE": "/cache"}) == [Path("/cache")]
    assert hf_cache_roots({CACHE_ROOT_ENV: " ", "HF_HUB_CACHE": ""}) == [Path(RUNPOD_HF_CACHE)]


def test_the_first_root_holding_the_snapshot_wins(tmp_path: Path) -> None:
    runpod, local = tmp_path / "runpod", tmp_path / "local"
    in_local = snapshot(local, REPO, OLD)
    env = {CACHE_ROOT_ENV: str(runpod), "HF_HOME": str(tmp_path / "hf")}
    assert hf_cache_snapshot(REPO, env=env) is None  # HF_HOME/hub is searched, local is not
    env = {CACHE_ROOT_ENV: str(runpod), "HF_HUB_CACHE": str(local)}
    assert hf_cache_snapshot(REPO, env=env) == in_local
    in_runpod = snapshot(runpod, REPO, MAIN)
    assert hf_cache_snapshot(REPO, env=env) == in_runpod
    # A revision only the second root has is found there.
    assert hf_cache_snapshot(REPO, env=env, revision=OLD) == in_local


def test_the_os_environment_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = tmp_path / "hub"
    snapshot(hub, REPO, MAIN)
    monkeypatch.setenv(CACHE_ROOT_ENV, str(hub))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    assert hf_cache_snapshot(REPO, env={}) is None or Path(RUNPOD_HF_CACHE).is_dir()
