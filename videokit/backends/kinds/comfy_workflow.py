"""A ComfyUI workflow for RunPod's ``worker-comfyui``, and the bindings placing videokit's values.

``worker-comfyui`` runs any graph exported with ComfyUI's "Save (API format)". It uploads each entry
of ``input.images`` to ComfyUI's input folder under its ``name`` (a LoadImage or LoadAudio node
refers to it by that filename) and returns only what output nodes report under "images": core
Save Video reports its mp4 there, VideoHelperSuite's Video Combine reports "gifs" and is dropped.
A bindings TOML file names the workflow JSON and, for each videokit value (prompt, seed, frames,
...), the ``"node_id.input"`` widget(s) it replaces; an optional ``[limits]`` table says what the
graph can render, for checks at plan time. :func:`load_comfy_workflow` reads both and refuses, in
one :class:`~videokit.errors.ConfigError`, every binding that would not reach the graph, a UI-format
export and a graph whose video the worker would not return; :meth:`ComfyWorkflow.inject` fills a
copy for one job. The file format is described in ``examples/comfy/README.md``.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Final, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from videokit.errors import ConfigError, StoryError

__all__ = [
    "BINDABLE",
    "REQUIRED_BINDINGS",
    "ComfyLimits",
    "ComfyWorkflow",
    "Target",
    "load_comfy_workflow",
]

#: Every name a bindings table may bind, with the type of value it carries. ``image`` and
#: ``audio`` carry the name the file was uploaded under, not the file itself.
BINDABLE: Final[Mapping[str, type]] = {
    **dict.fromkeys(("image", "prompt", "negative_prompt", "audio"), str),
    **dict.fromkeys(("seed", "frames", "width", "height", "steps"), int),
    **dict.fromkeys(("fps", "cfg"), float),
}
_KIND_NAMES: Final = {str: "a text", int: "an integer", float: "a number"}
#: A graph that takes no start image or no prompt cannot animate a scene.
REQUIRED_BINDINGS: Final = ("image", "prompt")
_FILE_BINDINGS: Final = {"image": "LoadImage node's image", "audio": "LoadAudio node's audio"}
_LOADERS: Final = frozenset({"LoadImage", "LoadImageMask", "LoadAudio"})
# The core nodes whose video lands under "images", the one key worker-comfyui collects.
_VIDEO_OUTPUTS: Final = frozenset({"SaveVideo", "SaveWEBM"})
_TOP_KEYS: Final = ("workflow", "bindings", "limits")
_README: Final = "examples/comfy/README.md describes the bindings file"
_EXPORT_API: Final = (
    'export it in API format: in ComfyUI, "Workflow > Export (API)" (older versions: enable '
    '"Dev mode" in the settings, then "Save (API Format)")'
)


class Target(NamedTuple):
    """One node input a binding sets: ``"57.noise_seed"`` is ``Target("57", "noise_seed")``."""

    node: str
    input: str

    def __str__(self) -> str:
        return f"{self.node}.{self.input}"


def _grid(low: float, high: float, step: int, offset: int) -> range:
    """The integers ``step * n + offset`` in ``[low, high]``."""
    first = int(low) + (offset - int(low)) % step
    return range(first, int(high) + 1, step)


def _nearest(values: range, value: int) -> int:
    if value <= values[0]:
        return values[0]
    if value >= values[-1]:
        return values[-1]
    below = values[0] + (value - values[0]) // values.step * values.step
    return min((below, below + values.step), key=lambda v: (abs(v - value), v))


class ComfyLimits(BaseModel):
    """What a graph can render: the ``[limits]`` table, checked at plan time (defaults suit Wan).

    Width and height are multiples of ``side_multiple`` in ``[side_min, side_max]``; a clip has
    ``frames_step * n + 1`` frames in ``[frames_min, frames_max]`` (Wan's VAE packs 4 frames into
    each latent after the first: 4n+1); ``fps`` is the rate the video is written at.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    side_min: int = Field(256, ge=1)
    side_max: int = Field(1280, ge=1)
    side_multiple: int = Field(16, ge=1)
    frames_min: int = Field(5, ge=1)
    frames_max: int = Field(121, ge=1)
    frames_step: int = Field(4, ge=1)
    fps_min: float = Field(1.0, gt=0)
    fps_max: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> ComfyLimits:
        for what in ("side", "frames", "fps"):
            if getattr(self, f"{what}_min") > getattr(self, f"{what}_max"):
                raise ValueError(f"{what}_min is above {what}_max")
        if not self.sides():
            raise ValueError("no multiple of side_multiple lies between side_min and side_max")
        if not self.frame_counts():
            raise ValueError("no frames_step * n + 1 lies between frames_min and frames_max")
        return self

    def sides(self) -> range:
        return _grid(self.side_min, self.side_max, self.side_multiple, 0)

    def frame_counts(self) -> range:
        return _grid(self.frames_min, self.frames_max, self.frames_step, 1)

    def nearest_side(self, side: int) -> int:
        return _nearest(self.sides(), side)

    def nearest_frames(self, frames: int) -> int:
        return _nearest(self.frame_counts(), frames)

    def problems(
        self,
        *,
        width: int | None = None,
        height: int | None = None,
        frames: int | None = None,
        fps: float | None = None,
    ) -> list[str]:
        """What the graph cannot render among these values, each with the nearest it can."""
        found: list[str] = []
        for label, side in (("width", width), ("height", height)):
            if side is not None and side not in self.sides():
                found.append(
                    f"{label} {side} is not a multiple of {self.side_multiple} between "
                    f"{self.side_min} and {self.side_max} (nearest: {self.nearest_side(side)})"
                )
        if frames is not None and frames not in self.frame_counts():
            shape = f"{self.frames_step}n+1" if self.frames_step > 1 else "a frame count"
            found.append(
                f"{frames} frames is not {shape} between {self.frames_min} and "
                f"{self.frames_max} (nearest: {self.nearest_frames(frames)})"
            )
        if fps is not None and not self.fps_min <= fps <= self.fps_max:
            found.append(f"{fps:g} fps is outside {self.fps_min:g}-{self.fps_max:g}")
        return found


@dataclass(frozen=True)
class ComfyWorkflow:
    """A validated API-format graph and its bindings. ``graph`` is read-only: fill a copy with
    :meth:`inject`. ``output_nodes``: the Save Video nodes whose files the worker returns."""

    source: Path
    workflow_path: Path
    graph: Mapping[str, Any] = field(repr=False)
    bindings: Mapping[str, tuple[Target, ...]]
    limits: ComfyLimits
    output_nodes: tuple[str, ...]

    def bound(self, name: str) -> bool:
        """Whether the graph takes ``name`` (a scene's value for an unbound name is not sent)."""
        return name in self.bindings

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the canonical graph and bindings, for cache keys: any edit to a node's value
        or to a binding changes it; re-formatting the files and renaming node titles do not."""
        graph = {
            node_id: {key: value for key, value in node.items() if key != "_meta"}
            for node_id, node in self.graph.items()
        }
        bindings = {name: sorted(map(str, targets)) for name, targets in self.bindings.items()}
        payload = {"bindings": bindings, "workflow": graph}
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def inject(
        self, values: Mapping[str, object], *, image_name: str, audio_name: str | None = None
    ) -> dict[str, Any]:
        """A copy of the graph with each bound input set: ``values`` by name (None, or a name the
        graph does not bind, is skipped), ``image``/``audio`` to the uploaded files' names."""
        takes = set(BINDABLE) - set(_FILE_BINDINGS)
        unknown = sorted(set(values) - takes)
        if unknown:
            raise ValueError(
                f"cannot inject {unknown}: values take {sorted(takes)}; "
                "the image and audio go as image_name and audio_name"
            )
        if audio_name is not None and not self.bound("audio"):
            raise StoryError(
                f"the scene has audio, but the ComfyUI workflow of {self.source} takes none",
                hint="bind audio to a LoadAudio node, or use a graph that has one (wan22-s2v)",
            )
        if audio_name is None and self.bound("audio"):
            raise StoryError(
                f"the ComfyUI workflow of {self.source} is driven by audio; the scene has none",
                hint="give the scene an audio file, or use a graph without an audio binding",
            )
        filled = {"image": image_name, "audio": audio_name, **values}
        graph = copy.deepcopy(dict(self.graph))
        for name, targets in self.bindings.items():
            value = filled.get(name)
            if value is None:
                continue
            if not _fits(BINDABLE[name], value):
                raise TypeError(f"{name} takes {_KIND_NAMES[BINDABLE[name]]}, not {value!r}")
            for target in targets:
                graph[target.node]["inputs"][target.input] = value
        return graph


def _fits(kind: type, value: object) -> bool:
    if isinstance(value, bool):  # a bool is an int to Python, never a seed or a size
        return False
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


def _did_you_mean(word: str, options: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _natural(node_id: str) -> list[Any]:
    # "6" < "50" < "129:98": subgraph exports name inner nodes "outer:inner".
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", node_id)]


def _node_list(graph: Mapping[str, Any], limit: int = 40) -> str:
    ids = sorted(graph, key=_natural)
    listed = ", ".join(f"{node_id} ({graph[node_id]['class_type']})" for node_id in ids[:limit])
    return listed + (f", ... ({len(ids) - limit} more)" if len(ids) > limit else "")


def _is_node(node: object) -> bool:
    return (
        isinstance(node, dict)
        and isinstance(node.get("class_type"), str)
        and isinstance(node.get("inputs"), dict)
    )


def _is_link(value: object) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


def _parse_bindings(raw: object, problems: list[str]) -> dict[str, tuple[Target, ...]]:
    if raw is None:
        problems.append("no [bindings] table: it must bind at least image and prompt")
        return {}
    if not isinstance(raw, dict):
        problems.append("'bindings' must be a table of name = \"node_id.input\"")
        return {}
    bindings: dict[str, tuple[Target, ...]] = {}
    owner: dict[Target, str] = {}
    for name, value in raw.items():
        if name not in BINDABLE:
            problems.append(
                f"unknown binding '{name}'{_did_you_mean(name, BINDABLE)}; "
                f"the names are {', '.join(BINDABLE)}"
            )
            continue
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            problems.append(
                f"binding '{name}' must be \"node_id.input\" or a non-empty list of them, "
                f"not {value!r}"
            )
            continue
        targets: list[Target] = []
        for text in texts:
            node, _, input_name = text.strip().rpartition(".")
            if not node or not input_name:
                problems.append(f'binding \'{name}\': {text!r} is not "node_id.input" ("6.text")')
                continue
            target = Target(node, input_name)
            if target in owner:
                problems.append(f"{target} is bound twice ({owner[target]} and {name})")
                continue
            owner[target] = name
            targets.append(target)
        if targets:
            bindings[name] = tuple(targets)
    for name in REQUIRED_BINDINGS:
        if name not in raw:
            problems.append(f"binding '{name}' is missing; a graph must take an image and a prompt")
    return bindings


def _parse_limits(raw: object, problems: list[str]) -> ComfyLimits:
    if not isinstance(raw, dict):
        problems.append("'limits' must be a table")
        return ComfyLimits()
    for key in raw:
        if key not in ComfyLimits.model_fields:
            problems.append(
                f"unknown limit '{key}'{_did_you_mean(key, ComfyLimits.model_fields)}; "
                f"the limits are {', '.join(ComfyLimits.model_fields)}"
            )
    try:
        return ComfyLimits(**{k: v for k, v in raw.items() if k in ComfyLimits.model_fields})
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(map(str, error["loc"]))
            problems.append(f"limits{'.' + where if where else ''}: {error['msg']}")
        return ComfyLimits()


def _load_graph(source: Path, raw: object, problems: list[str]) -> tuple[Path, dict[str, Any]]:
    """The workflow's path and graph; an empty graph (with a problem noted) when unusable."""
    if not isinstance(raw, str) or not raw.strip():
        problems.append(
            "'workflow' must name the API-format workflow JSON file, relative to this file"
        )
        return source, {}
    path = source.parent / raw
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(f"workflow file {path} does not exist")
        return path, {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"workflow file {path} is not a JSON file: {exc}")
        return path, {}
    if isinstance(data, dict) and all(isinstance(data.get(k), list) for k in ("nodes", "links")):
        problems.append(
            f'{path} is a workflow in ComfyUI\'s UI format (it has "nodes" and "links"), '
            f"which worker-comfyui cannot run; {_EXPORT_API}"
        )
        return path, {}
    request = data.get("input", data) if isinstance(data, dict) else None
    if isinstance(request, dict) and isinstance(request.get("workflow"), dict):
        problems.append(
            f"{path} is a worker request, not a workflow: save only the value of input.workflow"
        )
        return path, {}
    nodes = data.items() if isinstance(data, dict) else []
    bad = [str(i) for i, node in nodes if not _is_node(node)]
    if not nodes or bad:
        what = f": entries {', '.join(bad[:10])} are not nodes" if bad else ""
        problems.append(
            f"{path} is not a ComfyUI workflow in API format (an object of nodes, each with "
            f"class_type and inputs){what}; {_EXPORT_API}"
        )
        return path, {}
    return path, data


def _check_targets(
    graph: Mapping[str, Any], bindings: Mapping[str, tuple[Target, ...]], problems: list[str]
) -> None:
    for name, targets in bindings.items():
        for target in targets:
            node = graph.get(target.node)
            if node is None:
                problems.append(
                    f"binding '{name}': node {target.node} is not in the workflow; its nodes are "
                    f"{_node_list(graph)}"
                )
                continue
            kind, inputs = node["class_type"], node["inputs"]
            where = f"binding '{name}': node {target.node} ({kind})"
            if target.input not in inputs:
                listed = ", ".join(inputs) or "none"
                problems.append(
                    f"{where} has no input '{target.input}'"
                    f"{_did_you_mean(target.input, inputs)}; its inputs are {listed}"
                )
                continue
            value = inputs[target.input]
            if _is_link(value):
                source_node = graph.get(value[0], {}).get("class_type", "missing")
                problems.append(
                    f"{where}: input '{target.input}' is a link from node {value[0]} "
                    f"({source_node}), not a widget value, and setting it would cut the graph; "
                    f"bind the widget that feeds it, or turn the input back into a widget"
                )
            elif name in _FILE_BINDINGS and not (kind in _LOADERS or kind.startswith("Load")):
                problems.append(
                    f"{where} is not an input file node: '{name}' must bind a "
                    f"{_FILE_BINDINGS[name]} input (it gets the uploaded file's name)"
                )
            elif not _fits(BINDABLE[name], value):
                problems.append(
                    f"{where}: input '{target.input}' holds {value!r}, but '{name}' sets "
                    f"{_KIND_NAMES[BINDABLE[name]]}"
                )


def _video_outputs(graph: Mapping[str, Any], problems: list[str]) -> tuple[str, ...]:
    outputs = tuple(
        sorted((i for i, n in graph.items() if n["class_type"] in _VIDEO_OUTPUTS), key=_natural)
    )
    if graph and not outputs:
        combine = sorted(i for i, n in graph.items() if n["class_type"] == "VHS_VideoCombine")
        why = (
            f'node {", ".join(combine)} (VHS_VideoCombine) reports its video under "gifs", '
            'which worker-comfyui does not return (it collects only a node\'s "images"); '
            'feed its images to the core "Create Video" and "Save Video" nodes instead'
            if combine
            else 'end it with the core "Create Video" and "Save Video" nodes (Save Video '
            'reports its mp4 under "images", the only output worker-comfyui returns)'
        )
        problems.append(f"the workflow has no Save Video node, so no video would come back: {why}")
    return outputs


def load_comfy_workflow(bindings_path: str | Path) -> ComfyWorkflow:
    """Read a bindings TOML file and the workflow it names; refuse every problem at once."""
    source = Path(bindings_path)
    try:
        document = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"ComfyUI bindings file {source} does not exist", hint=_README) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read ComfyUI bindings file {source}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}", hint=_README) from None
    problems: list[str] = [
        f"unknown key '{key}'{_did_you_mean(key, _TOP_KEYS)}; the keys are {', '.join(_TOP_KEYS)}"
        for key in document
        if key not in _TOP_KEYS
    ]
    bindings = _parse_bindings(document.get("bindings"), problems)
    limits = _parse_limits(document.get("limits", {}), problems)
    workflow_path, graph = _load_graph(source, document.get("workflow"), problems)
    if graph:
        _check_targets(graph, bindings, problems)
    outputs = _video_outputs(graph, problems)
    if problems:
        head = "1 problem" if len(problems) == 1 else f"{len(problems)} problems"
        body = "\n".join(f"- {problem}" for problem in problems)
        raise ConfigError(f"invalid ComfyUI bindings {source} ({head}):\n{body}", hint=_README)
    return ComfyWorkflow(source, workflow_path, graph, bindings, limits, outputs)
