"""What endpoints can render, held against a story before anything is paid for.

A story planned with a public endpoint's capabilities (``videokit.backends.capabilities_for``) is
refused with located problems whose hints name the nearest thing the endpoint can do; a duration
becomes whole seconds; per-output prices (built in, or overridden in videokit.toml or the
environment) reach the cost model that ``plan`` estimates with.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from videokit.backends import capabilities_for, capabilities_of, create_backend
from videokit.backends.kinds.catalogue import PUBLIC_MODELS
from videokit.capabilities import Capabilities
from videokit.config import Settings
from videokit.errors import ConfigError, Problem, StoryError
from videokit.pipeline.runner import Pipeline
from videokit.protocol import AnimateRequest, MediaInput
from videokit.story import load_story, plan_story
from videokit.story.plan import StoryPlan

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
WAN = "wan-2-2-i2v-720"
QWEN = "qwen-image-edit-2511"
WriteStory = Callable[..., Path]

PUBLIC = {"VIDEOKIT_EDIT_ENDPOINT": QWEN, "VIDEOKIT_ANIMATE_ENDPOINT": WAN}
S3 = {
    "VIDEOKIT_S3_BUCKET": "b",
    "VIDEOKIT_S3_ACCESS_KEY_ID": "a",
    "VIDEOKIT_S3_SECRET_ACCESS_KEY": "s",
}


def public(edit: str = QWEN, animate: str = WAN) -> Capabilities:
    settings = Settings.resolve(
        env={"VIDEOKIT_EDIT_ENDPOINT": edit, "VIDEOKIT_ANIMATE_ENDPOINT": animate}, dotenv=None
    )
    return capabilities_for(None, settings)  # runpod: endpoint ids alone choose it


def plan(path: Path, caps: Capabilities | None = None) -> StoryPlan:
    return plan_story(load_story(path), capabilities=caps)


def problems(path: Path, caps: Capabilities) -> list[Problem]:
    with pytest.raises(StoryError) as caught:
        plan(path, caps)
    return caught.value.problems


def at(found: list[Problem], field: str) -> Problem:
    matches = [p for p in found if p.field == field]
    assert len(matches) == 1, [(p.field, p.message) for p in found]
    return matches[0]


def test_a_public_endpoint_refuses_its_wrong_size_and_clip_length_with_the_nearest_as_hints(
    write_story: WriteStory,
) -> None:
    story = write_story(
        """
        title: t
        reference: ref.png
        defaults:
          width: 832
          height: 480
          frames: 49
        scenes:
          - {id: one, motion: drift}
          - {id: two, motion: drift}
        """
    )
    assert plan(story).final_frames == 49 + 48  # without capabilities: today's rules
    found = problems(story, public())
    assert len(found) == 2  # each default is reported once, not once per scene
    size = at(found, "defaults.width")
    assert size.message == f"the animate endpoint {WAN} renders 1280x720 or 720x1280, not 832x480"
    assert size.hint == "set width: 1280 and height: 720"
    assert (size.file, size.line) == (story, 4)
    frames = at(found, "defaults.frames")
    assert "49 frames" in frames.message and frames.line == 6
    assert (
        frames.hint
        == f"use frames: 81 (5 s) — {WAN} renders 5-15 whole seconds at 16 fps (81-241 frames)"
    )


def test_a_duration_becomes_whole_seconds_and_the_timeline_uses_the_frames_it_will_have(
    write_story: WriteStory,
) -> None:
    story = write_story(
        """
        title: t
        reference: ref.png
        defaults: {width: 1280, height: 720, duration: 5.3}
        scenes:
          - {id: one, motion: drift}
          - {id: two, motion: drift, duration: 6.5}
          - {id: three, motion: drift, frames: 81, from: reference, transition: {crossfade: 0.5}}
          - {id: four, motion: drift, from: reference}
        """
    )
    result = plan(story, public())
    assert {s.id: s.frames for s in result.scenes.values()} == {
        "one": 81,
        "two": 16 * 7 + 1,  # 6.5 s: halves round up
        "three": 81,
        "four": 81,
    }
    assert [e.frames for e in result.timeline] == [81, 113, 81, 81]
    assert result.final_frames == 81 + (113 - 1) + 81 + 81 - 8
    assert result.frame_formula().startswith("81 + (113 - 1 seam) + 81 + 81 - 8 crossfade = 347")
    warnings = "\n".join(result.warnings)
    assert f"duration 5.3 s becomes 5 s (81 frames): {WAN} renders whole seconds" in warnings
    assert f"duration 6.5 s becomes 7 s (113 frames): {WAN} renders whole seconds" in warnings
    assert "story.yaml:3" in warnings and "scenes[1].duration" in warnings
    assert result.scenes["one"].frames_note == "5.3 s -> 5 s at 16 fps -> 81 frames (whole seconds)"
    # Without capabilities a duration is the nearest 4k+1 count, as before.
    assert plan(story).scenes["one"].frames == 85


def test_lengths_out_of_the_endpoints_range_and_a_wrong_fps_are_problems(
    write_story: WriteStory,
) -> None:
    story = write_story(
        """
        title: t
        reference: ref.png
        defaults: {width: 720, height: 1280, fps: 24}
        scenes:
          - {id: short, motion: drift, duration: 2.5}
          - {id: long, motion: drift, duration: 20}
          - {id: odd, motion: drift, frames: 83}
        """
    )
    found = problems(story, public())
    assert at(found, "defaults.fps").hint == "set fps: 16"
    short = at(found, "scenes[0].duration")
    assert "2.5 s is too short" in short.message and short.scene == "short"
    assert (short.hint or "").startswith("use duration: 5 (81 frames)")
    assert (at(found, "scenes[1].duration").hint or "").startswith("use duration: 15 (241 frames)")
    assert (at(found, "scenes[2].frames").hint or "").startswith("use frames: 81 (5 s)")
    assert len(found) == 4  # 83 is not 4k+1 either: said once, by the endpoint's rule


def test_explicit_steps_and_guidance_must_be_in_range_and_ignored_settings_warn(
    write_story: WriteStory,
) -> None:
    story = write_story(
        """
        title: t
        reference: ref.png
        defaults:
          width: 1280
          height: 720
          animate: {guidance_2: 2.0}
          edit: {steps: 30, negative_prompt: ugly}
        scenes:
          - {id: one, motion: drift, edit: at night, animate: {steps: 60}}
          - {id: two, motion: drift, animate: {guidance: 12}}
        """
    )
    found = problems(story, public())
    steps = at(found, "scenes[0].animate.steps")
    assert "steps 60" in steps.message and "1-50" in steps.message and steps.scene == "one"
    assert "guidance 12" in at(found, "scenes[1].animate.guidance").message
    assert len(found) == 2

    text = story.read_text().replace("steps: 60", "steps: 30")
    story.write_text(text.replace("guidance: 12", "guidance: 3"))
    warnings = "\n".join(plan(story, public()).warnings)
    assert f"guidance_2 is ignored: the animate endpoint {WAN} takes one guidance scale" in warnings
    assert f"the edit negative prompt is ignored by {QWEN}" in warnings
    assert f"edit steps 30 is ignored by {QWEN}" in warnings
    # The Lightning defaults are not sent at all, so they are never out of range.
    assert plan_story(load_story(story), capabilities=Capabilities()).warnings == ()


def test_an_edit_with_more_images_than_the_edit_endpoint_takes_is_a_problem(
    write_story: WriteStory, story_dir: Path
) -> None:
    (story_dir / "hat.png").write_bytes((story_dir / "ref.png").read_bytes())
    story = write_story(
        """
        title: t
        reference: ref.png
        defaults: {width: 1280, height: 720}
        scenes:
          - id: one
            motion: drift
            edit: {prompt: with a hat, images: [hat.png]}
        """
    )
    assert plan(story, public()).edit_size == (1536, 1080)  # 2511 takes 3 images
    found = problems(story, public(edit="qwen-image-edit"))
    problem = at(found, "scenes[0].edit.images")
    assert "this edit would get 2 images" in problem.message
    assert "the edit endpoint qwen-image-edit takes at most 1" in problem.message
    assert problem.hint == "remove this edit's images"
    # Extra story references go to every edit: too many of them are said once, at `reference`.
    story.write_text(
        story.read_text().replace("reference: ref.png", "reference: [ref.png, hat.png]")
    )
    story.write_text(story.read_text().replace(", images: [hat.png]", ""))
    found = problems(story, public(edit="qwen-image-edit"))
    assert "qwen-image-edit takes at most 0" in at(found, "reference").message


def test_capabilities_come_from_public_endpoint_ids_or_a_backend_object(tmp_path: Path) -> None:
    settings = Settings.resolve(env={**PUBLIC, "RUNPOD_API_KEY": "x"}, dotenv=None)
    caps = capabilities_for(None, settings)
    assert caps.edit == PUBLIC_MODELS[QWEN].capabilities
    assert caps.animate == PUBLIC_MODELS[WAN].capabilities
    assert caps.inputs_by_url
    assert capabilities_for("preview", settings) == Capabilities()
    own = Settings.resolve(env={"VIDEOKIT_ANIMATE_ENDPOINT": "abc123"}, dotenv=None)
    assert capabilities_for(None, own) == Capabilities()
    swapped = Settings.resolve(env={"VIDEOKIT_EDIT_ENDPOINT": WAN}, dotenv=None)
    assert capabilities_for("runpod", swapped) == Capabilities()  # create_backend refuses it
    # A backend object says itself, and the pipeline plans against it.
    backend = create_backend("runpod", settings)
    assert capabilities_of(backend) == caps
    with pytest.raises(StoryError, match="1280x720 or 720x1280"):
        Pipeline(EXAMPLES / "story.yaml", backend=backend, out=tmp_path).plan()


def test_output_prices_are_built_in_and_overridden_by_the_config_file_and_environment(
    tmp_path: Path,
) -> None:
    image = MediaInput(base64="iVBORw0KGgo=")
    clip = AnimateRequest(image=image, prompt="p", width=1280, height=720, frames=81, seed=1)
    built_in = Settings.resolve(env=PUBLIC, dotenv=None).cost_model()
    assert built_in.output_prices["animate"] == PUBLIC_MODELS[WAN].price
    assert built_in.estimate_cost("animate", clip) == pytest.approx(0.30)
    assert "edit" in built_in.output_prices
    assert Settings.resolve(env={}, dotenv=None).cost_model().output_prices == {}

    toml = tmp_path / "videokit.toml"
    toml.write_text(f'[output_prices]\n"{WAN}" = 0.05\n"{QWEN}" = 0.01\n')
    from_file = Settings.resolve(env=PUBLIC, dotenv=None, config_file=toml).cost_model()
    price = from_file.output_prices["animate"]
    assert (price.usd, price.per) == (0.05, "second")
    assert str(toml) in price.source and "overridden" in price.source
    assert from_file.estimate_cost("animate", clip) == pytest.approx(0.25)
    assert from_file.output_prices["edit"].usd == 0.01

    env = {**PUBLIC, "VIDEOKIT_OUTPUT_PRICES": json.dumps({WAN: 0.04})}
    from_env = Settings.resolve(env=env, dotenv=None, config_file=toml).cost_model()
    assert from_env.output_prices["animate"].usd == 0.04  # the environment wins
    assert "VIDEOKIT_OUTPUT_PRICES" in from_env.output_prices["animate"].source
    assert from_env.output_prices["edit"].usd == 0.01  # the file's, still


@pytest.mark.parametrize(
    ("where", "value", "fragment"),
    [
        ("env", "{wan: 1}", "VIDEOKIT_OUTPUT_PRICES is not valid JSON"),
        (
            "env",
            json.dumps({WAN: -1}),
            f"VIDEOKIT_OUTPUT_PRICES: the price of '{WAN}' must be a number of USD per second",
        ),
        (
            "env",
            json.dumps({"wan-2-2-i2v-72": 1}),
            "not a RunPod Public Endpoint videokit knows (did you mean 'wan-2-2-i2v-720'?)",
        ),
        ("env", "[1]", "VIDEOKIT_OUTPUT_PRICES must map public endpoint ids"),
        (
            "toml",
            f'"{QWEN}" = "cheap"',
            f"output_prices: the price of '{QWEN}' must be a number of USD per image",
        ),
        ("toml", "abc123 = 0.1", "output_prices: 'abc123' is not a RunPod Public Endpoint"),
    ],
)
def test_bad_output_prices_are_errors_that_say_where(
    tmp_path: Path, where: str, value: str, fragment: str
) -> None:
    toml = tmp_path / "videokit.toml"
    toml.write_text(f"[output_prices]\n{value}\n" if where == "toml" else "")
    env = {"VIDEOKIT_OUTPUT_PRICES": value} if where == "env" else {}
    with pytest.raises(ConfigError) as caught:
        Settings.resolve(env=env, dotenv=None, config_file=toml)
    assert fragment in caught.value.message
    if where == "toml":
        assert str(toml) in caught.value.message


# -- the command line -----------------------------------------------------------------------------


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def videokit(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # Only what the test sets: no endpoint, key or bucket of the machine running the tests.
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VIDEOKIT_", "RUNPOD_"))}
    return subprocess.run(
        [sys.executable, "-m", "videokit", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={
            **clean,
            # Any request would fail loudly: nothing listens there.
            "VIDEOKIT_RUNPOD_BASE_URL": f"http://127.0.0.1:{unused_port()}/v2",
            **env,
        },
    )


def test_validate_holds_the_example_story_against_the_public_endpoints(tmp_path: Path) -> None:
    env = {**PUBLIC, **S3, "VIDEOKIT_BACKEND": "runpod", "RUNPOD_API_KEY": "x"}
    result = videokit("validate", str(EXAMPLES / "story.yaml"), cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    assert "renders 1280x720 or 720x1280, not 832x480" in result.stderr
    assert "set width: 1280 and height: 720" in result.stderr
    assert "use frames: 81 (5 s)" in result.stderr
    assert "duration 2.5 s is too short" in result.stderr  # beach: all in one run
    assert "Traceback" not in result.stderr and "127.0.0.1" not in result.stderr

    made = videokit("validate", str(EXAMPLES / "story-720p.yaml"), cwd=tmp_path, env=env)
    assert made.returncode == 0, made.stderr
    assert "ok — 5 scenes, 2 edits, 315 frames" in made.stdout
    assert made.stderr == ""  # no warning either

    no_storage = {**PUBLIC, "RUNPOD_API_KEY": "x"}
    refused = videokit("validate", str(EXAMPLES / "story-720p.yaml"), cwd=tmp_path, env=no_storage)
    assert refused.returncode == 2
    assert "VIDEOKIT_S3_BUCKET" in refused.stderr and "by URL" in refused.stderr


def test_plan_prices_the_720p_example_per_output(tmp_path: Path) -> None:
    env = {**PUBLIC, **S3, "RUNPOD_API_KEY": "x"}
    story = str(EXAMPLES / "story-720p.yaml")
    out = str(tmp_path / "out")
    result = videokit("plan", story, "--out", out, "--json", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert {s["frames"] for s in body["scenes"].values()} == {81}
    costs = {sid: s["cost_usd"] for sid, s in body["scenes"].items()}
    # $0.06 a second for 5 s clips, $0.02 per edit (tuxedo and beach).
    assert costs == {"hello": 0.3, "tuxedo": 0.32, "roulette": 0.3, "beach": 0.32, "outtake": 0.3}
    assert body["cost_usd"] == body["all_jobs_cost_usd"] == pytest.approx(1.54)
    assert body["gpu_seconds"] == 0
    assert body["output_prices"]["animate"]["per"] == "second"
    assert body["edit_size"] == [1536, 1080]

    shown = videokit("plan", story, "--out", out, cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    assert "estimate: ~$1.540 on RunPod" in shown.stdout
    assert "animate: $0.06 per second (RunPod public endpoint, docs read" in shown.stdout

    cheaper = {**env, "VIDEOKIT_OUTPUT_PRICES": json.dumps({WAN: 0.05})}
    result = videokit("plan", story, "--out", out, "--json", cwd=tmp_path, env=cheaper)
    assert json.loads(result.stdout)["cost_usd"] == pytest.approx(5 * 0.25 + 2 * 0.02)
