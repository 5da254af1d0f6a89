"""ComfyUI workflows for worker-comfyui: the examples load, values land in exactly the bound inputs,
every kind of bad bindings file is refused with what to fix, and the fingerprint follows the graph."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from videokit.backends.kinds.comfy_workflow import (
    ComfyLimits,
    ComfyWorkflow,
    Target,
    load_comfy_workflow,
)
from videokit.errors import ConfigError, StoryError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "comfy"
I2V = EXAMPLES / "wan22-i2v-4step.toml"
S2V = EXAMPLES / "wan22-s2v.toml"

# A small graph in API format, with the shapes the checks look at.
GRAPH: dict[str, Any] = {
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["12", 0]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["12", 0]}},
    "12": {"class_type": "CLIPLoader", "inputs": {"clip_name": "umt5.safetensors", "type": "wan"}},
    "50": {
        "class_type": "WanImageToVideo",
        "inputs": {
            "width": 832,
            "height": 480,
            "length": 81,
            "batch_size": 1,
            "start_image": ["52", 0],
        },
    },
    "52": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
    "57": {
        "class_type": "KSampler",
        "inputs": {"seed": 1, "steps": 4, "cfg": 1.0, "positive": ["6", 0]},
    },
    "60": {"class_type": "CreateVideo", "inputs": {"fps": 16, "images": ["57", 0]}},
    "61": {"class_type": "SaveVideo", "inputs": {"filename_prefix": "video/x", "video": ["60", 0]}},
}
BINDINGS = {"image": "52.image", "prompt": "6.text"}


def write(
    tmp_path: Path,
    bindings: dict[str, Any] | None = None,
    graph: Any = None,
    extra: str = "",
    name: str = "graph.api.json",
) -> Path:
    """A bindings file (and its graph) under tmp_path; returns the bindings file's path."""
    (tmp_path / name).write_text(json.dumps(GRAPH if graph is None else graph, indent=2))
    lines = [f"{key} = {json.dumps(value)}" for key, value in (bindings or BINDINGS).items()]
    path = tmp_path / "bindings.toml"
    text = f'workflow = "{name}"\n{extra}\n[bindings]\n' + "\n".join(lines) + "\n"
    path.write_text(text)
    return path


def refused(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_comfy_workflow(path)
    assert caught.value.exit_code == 2
    message = str(caught.value)
    assert str(path) in message
    return message


def changed(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """``{"node.input": new value}`` for every input that differs."""
    assert before.keys() == after.keys()
    diff = {}
    for node_id, node in before.items():
        assert after[node_id]["class_type"] == node["class_type"]
        assert after[node_id].get("_meta") == node.get("_meta")
        for key, value in after[node_id]["inputs"].items():
            if node["inputs"].get(key) != value:
                diff[f"{node_id}.{key}"] = value
        assert after[node_id]["inputs"].keys() == node["inputs"].keys()
    return diff


# --- the examples -----------------------------------------------------------------------------


def test_i2v_example_loads_and_fills_exactly_the_bound_inputs() -> None:
    flow = load_comfy_workflow(I2V)
    assert flow.source == I2V
    assert flow.output_nodes == ("108",)
    assert flow.bindings["seed"] == (Target("86", "noise_seed"), Target("85", "noise_seed"))
    assert not flow.bound("audio") and flow.bound("negative_prompt")
    assert flow.limits == ComfyLimits(frames_max=81)
    values = {
        "prompt": "a lighthouse at dusk",
        "negative_prompt": "blur",
        "seed": 7,
        "frames": 49,
        "width": 480,
        "height": 832,
        "fps": 24.0,
        "steps": 6,
        "cfg": 1.5,
    }
    filled = flow.inject(values, image_name="scene-1.png", audio_name=None)
    assert changed(dict(flow.graph), filled) == {
        "97.image": "scene-1.png",
        "93.text": "a lighthouse at dusk",
        "89.text": "blur",
        "86.noise_seed": 7,
        "85.noise_seed": 7,
        "98.length": 49,
        "98.width": 480,
        "98.height": 832,
        "94.fps": 24.0,
        "86.steps": 6,
        "85.steps": 6,
        "86.cfg": 1.5,
        "85.cfg": 1.5,
    }
    # The loaded graph is left as it was, so the next job starts from the file's values.
    assert flow.graph["93"]["inputs"]["text"].startswith("The white dragon warrior")


def test_i2v_example_is_the_4_step_template() -> None:
    graph = load_comfy_workflow(I2V).graph
    high, low = graph["86"]["inputs"], graph["85"]["inputs"]
    assert (high["add_noise"], high["start_at_step"], high["end_at_step"]) == ("enable", 0, 2)
    assert high["return_with_leftover_noise"] == "enable"
    assert (low["add_noise"], low["start_at_step"], low["return_with_leftover_noise"]) == (
        "disable",
        2,
        "disable",
    )
    assert low["latent_image"] == ["86", 0] and high["latent_image"] == ["98", 2]
    assert {graph[i]["inputs"]["lora_name"] for i in ("101", "102")} == {
        "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors",
        "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors",
    }
    assert graph["108"]["class_type"] == "SaveVideo"


def test_s2v_example_binds_audio() -> None:
    flow = load_comfy_workflow(S2V)
    assert flow.output_nodes == ("113",)
    assert flow.bound("audio")
    filled = flow.inject(
        {"prompt": "she sings", "seed": 3, "frames": 77, "fps": None},
        image_name="ref.png",
        audio_name="voice.wav",
    )
    assert changed(dict(flow.graph), filled) == {
        "52.image": "ref.png",
        "58.audio": "voice.wav",
        "6.text": "she sings",
        "3.seed": 3,
    }
    assert filled["82"]["inputs"]["audio"] == ["58", 0]  # the soundtrack is the uploaded audio
    assert flow.limits.problems(fps=24) == ["24 fps is outside 16-16"]


def test_audio_must_match_the_graph() -> None:
    with pytest.raises(StoryError, match="takes none"):
        load_comfy_workflow(I2V).inject({}, image_name="a.png", audio_name="a.wav")
    with pytest.raises(StoryError, match="driven by audio"):
        load_comfy_workflow(S2V).inject({}, image_name="a.png", audio_name=None)


def test_inject_skips_unbound_names_and_refuses_wrong_values(tmp_path: Path) -> None:
    flow = load_comfy_workflow(write(tmp_path))
    filled = flow.inject({"prompt": "a dog", "seed": 5, "cfg": 2.0}, image_name="in.png")
    assert changed(GRAPH, filled) == {"52.image": "in.png", "6.text": "a dog"}
    with pytest.raises(ValueError, match="image_name"):
        flow.inject({"image": "x.png"}, image_name="in.png")
    with pytest.raises(ValueError, match="promt"):
        flow.inject({"promt": "typo"}, image_name="in.png")
    with pytest.raises(TypeError, match="prompt takes a text"):
        flow.inject({"prompt": 3}, image_name="in.png")


# --- refused bindings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bindings", "expected"),
    [
        (
            {**BINDINGS, "negativ_prompt": "7.text"},
            ["unknown binding 'negativ_prompt'", "did you mean 'negative_prompt'?"],
        ),
        (
            {**BINDINGS, "seed": "99.seed"},
            [
                "node 99 is not in the workflow; its nodes are 6 (CLIPTextEncode), 7 (CLIPTextEncode), 12 (CLIPLoader), 50 (WanImageToVideo), 52 (LoadImage), 57 (KSampler), 60 (CreateVideo), 61 (SaveVideo)"
            ],
        ),
        (
            {**BINDINGS, "frames": "50.lenght"},
            [
                "node 50 (WanImageToVideo) has no input 'lenght' (did you mean 'length'?); its inputs are width, height, length, batch_size, start_image"
            ],
        ),
        (
            {**BINDINGS, "prompt": "57.positive"},
            [
                "input 'positive' is a link from node 6 (CLIPTextEncode), not a widget value",
                "cut the graph",
            ],
        ),
        (
            {**BINDINGS, "image": "6.text"},
            ["node 6 (CLIPTextEncode) is not an input file node", "LoadImage node's image"],
        ),
        (
            {**BINDINGS, "audio": "7.text"},
            ["node 7 (CLIPTextEncode) is not an input file node", "LoadAudio node's audio"],
        ),
        (
            {**BINDINGS, "seed": "7.text"},
            ["input 'text' holds 'blurry', but 'seed' sets an integer"],
        ),
        (
            {**BINDINGS, "steps": []},
            ["binding 'steps' must be \"node_id.input\" or a non-empty list of them"],
        ),
        ({**BINDINGS, "steps": "57steps"}, ["'57steps' is not \"node_id.input\""]),
        (
            {**BINDINGS, "negative_prompt": "6.text"},
            ["6.text is bound twice (prompt and negative_prompt)"],
        ),
        ({"image": "52.image"}, ["binding 'prompt' is missing"]),
    ],
)
def test_bad_bindings_are_refused(
    tmp_path: Path, bindings: dict[str, Any], expected: list[str]
) -> None:
    message = refused(write(tmp_path, bindings))
    for text in expected:
        assert text in message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    bindings = {"image": "7.text", "prompt": "6.txt", "sead": "57.seed", "frames": "99.length"}
    message = refused(write(tmp_path, bindings, extra="[limits]\nframes_setp = 4\n"))
    assert "(5 problems)" in message
    for text in (
        "not an input file node",
        "no input 'txt'",
        "unknown binding 'sead'",
        "node 99",
        "unknown limit 'frames_setp' (did you mean 'frames_step'?)",
    ):
        assert text in message


def test_image_binding_takes_any_loader(tmp_path: Path) -> None:
    graph = {**GRAPH, "52": {"class_type": "LoadImageFromUrlOrPath", "inputs": {"image": "x"}}}
    assert load_comfy_workflow(write(tmp_path, graph=graph)).bound("image")


def test_bad_limits_are_refused(tmp_path: Path) -> None:
    message = refused(write(tmp_path, extra="[limits]\nframes_min = 90\nframes_max = 81\n"))
    assert "frames_min is above frames_max" in message
    message = refused(write(tmp_path, extra="[limits]\nside_multiple = 0\n"))
    assert "limits.side_multiple" in message
    message = refused(write(tmp_path, extra="[limits]\nframes_step = true\n"))
    assert "limits.frames_step: Input should be a valid integer" in message


def test_limits_report_the_nearest_value() -> None:
    limits = ComfyLimits(frames_max=81)
    assert limits.problems(width=832, height=480, frames=81, fps=16) == []
    assert limits.problems(width=900, frames=80) == [
        "width 900 is not a multiple of 16 between 256 and 1280 (nearest: 896)",
        "80 frames is not 4n+1 between 5 and 81 (nearest: 81)",
    ]
    assert limits.nearest_frames(200) == 81 and limits.nearest_frames(1) == 5
    assert limits.nearest_frames(79) == 77  # a tie goes to the shorter clip
    assert list(ComfyLimits(frames_min=2, frames_max=13).frame_counts()) == [5, 9, 13]


# --- refused workflows ------------------------------------------------------------------------


def test_ui_format_is_refused_with_how_to_export(tmp_path: Path) -> None:
    ui = {"last_node_id": 2, "nodes": [{"id": 1, "type": "LoadImage"}], "links": [], "version": 0.4}
    message = refused(write(tmp_path, graph=ui))
    assert "UI format" in message
    assert "Workflow > Export (API)" in message and "Dev mode" in message


def test_worker_request_is_refused(tmp_path: Path) -> None:
    message = refused(write(tmp_path, graph={"input": {"workflow": GRAPH}}))
    assert "save only the value of input.workflow" in message


def test_vhs_only_graph_is_refused(tmp_path: Path) -> None:
    graph = {key: node for key, node in GRAPH.items() if key not in ("60", "61")}
    graph["70"] = {
        "class_type": "VHS_VideoCombine",
        "inputs": {"images": ["57", 0], "frame_rate": 16},
    }
    message = refused(write(tmp_path, graph=graph))
    assert "no Save Video node" in message
    assert 'node 70 (VHS_VideoCombine) reports its video under "gifs"' in message
    assert "worker-comfyui does not return" in message and '"Save Video"' in message


def test_graph_without_any_video_output_is_refused(tmp_path: Path) -> None:
    graph = {key: node for key, node in GRAPH.items() if key != "61"}
    assert 'end it with the core "Create Video" and "Save Video"' in refused(
        write(tmp_path, graph=graph)
    )


def test_save_webm_is_a_video_output(tmp_path: Path) -> None:
    graph = {**GRAPH, "61": {"class_type": "SaveWEBM", "inputs": {"images": ["57", 0]}}}
    assert load_comfy_workflow(write(tmp_path, graph=graph)).output_nodes == ("61",)


def test_missing_or_broken_files_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path)
    (tmp_path / "graph.api.json").unlink()
    assert "graph.api.json does not exist" in refused(path)
    (tmp_path / "graph.api.json").write_text("{not json")
    assert "is not a JSON file" in refused(path)
    (tmp_path / "graph.api.json").write_text('{"1": {"class_type": "X"}}')
    assert "entries 1 are not nodes" in refused(path)
    path.write_text('workflow = "graph.api.json"\n[bindings\n')
    assert "is not valid TOML" in refused(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_comfy_workflow(tmp_path / "absent.toml")
    path.write_text('workflow = "graph.api.json"\nwokflow = 1\n')
    message = refused(path)
    assert "unknown key 'wokflow' (did you mean 'workflow'?)" in message
    assert "no [bindings] table" in message


# --- the fingerprint --------------------------------------------------------------------------


def test_fingerprint_follows_values_and_bindings_not_formatting(tmp_path: Path) -> None:
    base = load_comfy_workflow(write(tmp_path)).fingerprint
    # Re-formatted JSON and TOML, and a renamed node title: the same graph.
    compact = {key: {**node, "_meta": {"title": "renamed"}} for key, node in GRAPH.items()}
    (tmp_path / "graph.api.json").write_text(json.dumps(compact, separators=(",", ":")))
    (tmp_path / "bindings.toml").write_text(
        textwrap.dedent("""\
            # a comment
            workflow   =   'graph.api.json'
            [bindings]
            prompt = ["6.text"]
            image  = "52.image"
        """)
    )
    assert load_comfy_workflow(tmp_path / "bindings.toml").fingerprint == base
    # A widget value changes it; so does a binding.
    edited = json.loads(json.dumps(GRAPH))
    edited["12"]["inputs"]["clip_name"] = "other.safetensors"
    assert load_comfy_workflow(write(tmp_path, graph=edited)).fingerprint != base
    assert load_comfy_workflow(write(tmp_path, {**BINDINGS, "seed": "57.seed"})).fingerprint != base


def test_fingerprint_of_the_examples_is_stable() -> None:
    first: ComfyWorkflow = load_comfy_workflow(I2V)
    assert first.fingerprint == load_comfy_workflow(I2V).fingerprint
    assert first.fingerprint != load_comfy_workflow(S2V).fingerprint
    assert len(first.fingerprint) == 64
