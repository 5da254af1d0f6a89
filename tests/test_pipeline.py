"""The pipeline through its Python API, on the real preview backend with real ffmpeg."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import videokit
from tests.conftest import RecordingBackend
from videokit.backends.base import JobContext
from videokit.media.probe import probe_video
from videokit.pipeline.events import Event, RenderDone, SceneCached, SceneDone
from videokit.protocol import AnimateRequest, AnimateResult, EditRequest, EditResult

STORY = """
title: Branches
reference: ref.png
defaults: {width: 192, height: 128, frames: 9, fps: 8, seed: 3}
scenes:
  - id: a
    motion: the camera drifts
  - id: b
    edit: {prompt: now at night, seed: 5}
    motion: lights flicker
  - id: c
    motion: she walks on
    transition: {crossfade: 0.25}
  - id: alt
    from: a
    motion: another path
  - id: d
    from: b.edit
    motion: from the edited frame
timeline: [a, b, c, d]
"""


def render(story: Path, backend: RecordingBackend, **kwargs: object) -> videokit.RenderResult:
    return videokit.Pipeline(story, backend=backend, out=story.parent / "out", **kwargs).run()  # type: ignore[arg-type]


def test_render_produces_clips_manifest_contact_sheet_and_exact_final(
    write_story: Callable[..., Path], recording: RecordingBackend
) -> None:
    story = write_story(STORY)
    events: list[Event] = []
    result = videokit.Pipeline(
        story, backend=recording, out=story.parent / "out", on_event=events.append
    ).run()
    plan = videokit.Pipeline(story).plan()

    assert sorted(recording.scenes("animate")) == ["a", "alt", "b", "c", "d"]
    assert recording.scenes("edit") == ["b"]
    assert result.final_video is not None
    info = probe_video(result.final_video)
    # a 9 + b 9 + c (9 - 1 seam) - 2 crossfade (0.25 s at 8 fps) + d 9
    assert plan.final_frames == 9 + 9 + 8 + 9 - 2 == result.frames == info.frames
    assert (info.width, info.height, info.fps, info.codec) == (192, 128, 8.0, "h264")
    assert result.contact_sheet is not None and result.contact_sheet.stat().st_size > 1000

    manifest = json.loads(result.manifest.read_text())
    assert manifest["backend"] == "preview"
    assert manifest["final"]["frames"] == plan.final_frames
    assert manifest["final"]["formula"] == plan.frame_formula()
    scene_b = manifest["scenes"]["b"]
    assert scene_b["status"] == "done"
    assert scene_b["seed"] == plan.scenes["b"].seed
    assert len(scene_b["input_sha256"]) == 64
    assert scene_b["animate"]["params"]["frames"] == 9
    assert scene_b["animate"]["params"]["prompt"] == "lights flicker"
    assert scene_b["edit"]["status"] == "done" and scene_b["animate"]["key"]
    assert (result.workdir / scene_b["outputs"]["clip"]).is_file()
    assert (result.workdir / scene_b["outputs"]["edited_frame"]).is_file()
    # The branch is rendered and kept as its own clip, though not on the timeline.
    assert probe_video(result.scenes["alt"].clip).frames == 9
    # d starts from b's edited frame, exactly.
    assert result.scenes["b"].edited_frame is not None
    kinds = [e.type for e in events]
    assert kinds[0] == "render_started" and kinds[-1] == "render_done"
    assert kinds.count("scene_done") == 5


def test_next_scene_starts_from_the_lossless_last_frame(
    write_story: Callable[..., Path], recording: RecordingBackend
) -> None:
    story = write_story(STORY)
    result = render(story, recording)
    manifest = json.loads(result.manifest.read_text())
    import hashlib

    last_a = hashlib.sha256(result.scenes["a"].last_frame.read_bytes()).hexdigest()
    # alt starts from a's last frame: its input hash is the PNG's, not a decoded MP4 frame.
    assert manifest["scenes"]["alt"]["input_sha256"] == last_a
    edited_b = hashlib.sha256(result.scenes["b"].edited_frame.read_bytes()).hexdigest()  # type: ignore[union-attr]
    assert manifest["scenes"]["d"]["input_sha256"] == edited_b


def test_second_render_submits_nothing(
    write_story: Callable[..., Path], recording: RecordingBackend
) -> None:
    story = write_story(STORY)
    first = render(story, recording)
    recording.calls.clear()
    events: list[Event] = []
    second = videokit.Pipeline(
        story, backend=recording, out=story.parent / "out", on_event=events.append
    ).run()
    assert recording.calls == []
    assert all(s.cached for s in second.scenes.values())
    assert {e.scene for e in events if isinstance(e, SceneCached)} == set(first.scenes)
    assert second.final_video is not None
    assert second.final_video.read_bytes() == first.final_video.read_bytes()  # type: ignore[union-attr]


def test_changing_one_scene_rerenders_it_and_its_downstream_only(
    write_story: Callable[..., Path], recording: RecordingBackend
) -> None:
    story = write_story(STORY)
    render(story, recording)
    # A new animate seed for b (its edit keeps seed 5): b's clip and last frame change.
    story.write_text(
        STORY.replace("motion: lights flicker", "motion: lights flicker\n    seed: 99")
    )
    recording.calls.clear()
    result = render(story, recording)
    # c starts from b's last frame, so it re-renders. d starts from b's *edited* frame, which
    # did not change (the edit is cached), so d is reused; a and alt are untouched.
    assert recording.calls == [("animate", "b"), ("animate", "c")]
    assert sorted(result.rendered) == ["b", "c"]
    plan = videokit.Pipeline(story).plan()
    assert plan.graph.downstream(["b"]) == {"b", "c", "d"}


def test_changing_an_upstream_scene_invalidates_the_whole_subtree(
    write_story: Callable[..., Path], recording: RecordingBackend
) -> None:
    story = write_story(STORY)
    render(story, recording)
    story.write_text(
        STORY.replace("motion: the camera drifts", "motion: the camera drifts\n    seed: 42")
    )
    recording.calls.clear()
    render(story, recording)
    assert sorted(set(recording.scenes())) == ["a", "alt", "b", "c", "d"]


def test_force_and_only(write_story: Callable[..., Path], recording: RecordingBackend) -> None:
    story = write_story(STORY)
    render(story, recording)
    recording.calls.clear()
    result = render(story, recording, only=["c"])
    assert recording.calls == [("animate", "c")]
    # Every other scene is still current (from the cache), so the film is stitched again.
    assert result.final_video is not None and result.stale == []
    assert result.rendered == ["c"]
    recording.calls.clear()
    render(story, recording, force=True)
    assert sorted(recording.scenes()) == ["a", "alt", "b", "b", "c", "d"]


def test_only_keeps_the_other_scenes_on_the_contact_sheet(
    write_story: Callable[..., Path], recording: RecordingBackend
) -> None:
    from PIL import Image

    story = write_story(STORY)
    full = render(story, recording).contact_sheet
    assert full is not None
    with Image.open(full) as image:
        size = image.size
    partial = render(story, recording, only=["c"]).contact_sheet
    assert partial == full
    with Image.open(partial) as image:
        assert image.size == size  # every scene still has its row, not just c's


@dataclass
class RedeployedBackend(RecordingBackend):
    """Reports the model its endpoint serves, as a worker does; "redeployed" by setting it."""

    model: str = "wan2.2-a14b@lightning"

    async def animate(self, request: AnimateRequest, ctx: JobContext) -> AnimateResult:
        result = await super().animate(request, ctx)
        return result.model_copy(update={"model": self.model})

    async def edit(self, request: EditRequest, ctx: JobContext) -> EditResult:
        # Like the Qwen worker: the Lightning LoRA, and so the model name, follows the steps.
        result = await super().edit(request, ctx)
        return result.model_copy(update={"model": f"qwen-edit/lightning-{request.steps}"})


def test_cached_results_another_model_made_are_named_after_a_redeploy(
    write_story: Callable[..., Path],
) -> None:
    story = write_story(STORY)
    backend = RedeployedBackend()
    assert render(story, backend).warnings == []
    # The endpoint now serves another model; only scene alt changed, so only it runs.
    backend.model = "wan2.2-a14b@standard"
    write_story(STORY.replace("motion: another path", "motion: another path, slower"))
    events: list[Event] = []
    result = render(story, backend, on_event=events.append)
    assert result.rendered == ["alt"]
    (warning,) = result.warnings
    assert "now serves wan2.2-a14b@standard" in warning
    assert "scene(s) a, b, c, d were made by wan2.2-a14b@lightning" in warning
    assert "--force" in warning
    done = [e for e in events if isinstance(e, RenderDone)]
    assert done[0].warnings == result.warnings
    # Nothing ran this time: nothing to compare with, and nothing is said.
    assert render(story, backend).warnings == []


def test_a_model_name_that_follows_the_step_count_is_not_a_redeploy(
    write_story: Callable[..., Path],
) -> None:
    story = write_story(STORY)
    backend = RedeployedBackend()
    render(story, backend)
    # A new scene edits with 4 steps (lightning-4) while b's cached 8-step edit says lightning-8.
    extra = "  - {id: e, from: reference, edit: {prompt: at dawn, steps: 4}, motion: sunrise}\n"
    write_story(STORY.replace("timeline:", extra + "timeline:"))
    result = render(story, backend)
    assert result.rendered == ["e"] and result.warnings == []


def test_only_unknown_scene_is_a_story_error(write_story: Callable[..., Path]) -> None:
    story = write_story(STORY)
    with pytest.raises(videokit.StoryError, match="unknown scene"):
        videokit.Pipeline(story, only=["zz"]).plan()


def test_a_failing_scene_does_not_stop_independent_branches(
    write_story: Callable[..., Path],
) -> None:
    story = write_story(STORY)
    failing = RecordingBackend(fail={"b"})
    with pytest.raises(videokit.RenderError) as caught:
        render(story, failing)
    assert set(caught.value.failures) == {"b"}
    manifest = json.loads((story.parent / "out" / "manifest.json").read_text())
    statuses = {k: v["status"] for k, v in manifest["scenes"].items()}
    assert statuses == {"a": "done", "alt": "done", "b": "failed", "c": "skipped", "d": "skipped"}
    assert "injected failure" in manifest["scenes"]["b"]["error"]

    healthy = RecordingBackend()
    render(story, healthy)
    # Finished scenes were cached: the retry pays only for the failed scene and its dependants.
    assert sorted(healthy.scenes()) == ["b", "b", "c", "d"]


def test_independent_branches_run_concurrently(write_story: Callable[..., Path]) -> None:
    story = write_story(
        """
        title: Fan out
        reference: ref.png
        defaults: {width: 128, height: 128, frames: 5, fps: 8}
        scenes:
          - {id: one, from: reference, motion: m1}
          - {id: two, from: reference, motion: m2}
          - {id: three, from: reference, motion: m3}
          - {id: four, motion: after three}
        """
    )
    backend = RecordingBackend(delay=0.3)
    render(story, backend)
    assert backend.max_active >= 3
    start = {s: t for kind, s, t in backend.log if kind == "start"}
    end = {s: t for kind, s, t in backend.log if kind == "end"}
    # A scene starts as soon as its input exists: four right after three, not after all three.
    assert start["four"] >= end["three"]

    limited = RecordingBackend(delay=0.1)
    # force: the results are in the user's store now, and this render must run its jobs.
    videokit.Pipeline(
        story, backend=limited, out=story.parent / "o2", concurrency=1, force=True
    ).run()
    assert limited.max_active == 1


def test_python_api_with_a_list_of_scenes(story_dir: Path, recording: RecordingBackend) -> None:
    scenes = [
        videokit.Scene(id="hello", motion="a wave", frames=5),
        videokit.Scene(id="later", motion="a nod", frames=5, edit=videokit.Edit(prompt="in a hat")),
    ]
    result = videokit.Pipeline(
        scenes, reference=story_dir / "ref.png", backend=recording, out=story_dir / "api"
    ).run()
    assert result.final_video is not None
    assert probe_video(result.final_video).frames == 10
    assert [s.id for s in result.scenes.values()] == ["hello", "later"]


def test_derived_seeds_are_stable_and_recorded(write_story: Callable[..., Path]) -> None:
    story = write_story(STORY)
    one = videokit.Pipeline(story).plan()
    two = videokit.Pipeline(story).plan()
    assert {k: s.seed for k, s in one.scenes.items()} == {k: s.seed for k, s in two.scenes.items()}
    assert len({s.seed for s in one.scenes.values()}) == len(one.scenes)
    assert all(s.seed_derived for s in one.scenes.values())


def test_duration_is_converted_to_4k_plus_1(write_story: Callable[..., Path]) -> None:
    story = write_story(
        """
        title: Durations
        reference: ref.png
        defaults: {fps: 16}
        scenes:
          - {id: a, motion: m, duration: 2.5}
          - {id: b, motion: m, duration: 5}
        """
    )
    plan = videokit.Pipeline(story).plan()
    assert plan.scenes["a"].frames == 41 and plan.scenes["b"].frames == 81
    assert "2.5 s at 16 fps -> 41 frames" in (plan.scenes["a"].frames_note or "")


def test_events_report_done_per_scene(
    write_story: Callable[..., Path], recording: RecordingBackend
) -> None:
    story = write_story(STORY)
    events: list[Event] = []
    videokit.Pipeline(
        story, backend=recording, out=story.parent / "out", on_event=events.append
    ).run()
    done = [e for e in events if isinstance(e, SceneDone)]
    assert {e.scene for e in done} == {"a", "b", "c", "alt", "d"}
    assert all(not e.cached for e in done)
