"""Composing a story's YAML into plain data while recording the line of every value.

PyYAML's safe loader drops positions, so the node tree is built here and the line of every value
is recorded by its path, e.g. ``("scenes", 2, "frames") -> 14``, for problems to point at. YAML
aliases and merge keys are expanded within bounds, so a small file cannot expand without limit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from videokit.errors import Problem, StoryError
from videokit.story.field_paths import Loc, format_field

__all__ = ["MAX_DEPTH", "MAX_NODES", "compose_with_lines"]


#: Values (mappings, lists and scalars) a story may expand to. A real story has hundreds; YAML
#: aliases nested in each other multiply (five levels of ten `*x` in a 1 kB file are 100000
#: values and 250 MB), so expanding stops here instead of running out of memory.
MAX_NODES = 100_000
#: Nesting levels of mappings and lists (a story needs about five).
MAX_DEPTH = 40

_MERGE_TAG = "tag:yaml.org,2002:merge"


def compose_with_lines(text: str, source: Path | None) -> tuple[Any, dict[Loc, int], list[Problem]]:
    """The data and the line of every value; problems the rest of the story can be checked
    without (a duplicate key, a key that is not a name) are returned, the others raised."""
    loader = yaml.SafeLoader(text)
    builder = _Builder(loader, source)
    try:
        node = loader.get_single_node()
        if node is None:
            raise StoryError(
                [
                    Problem(
                        "story file is empty",
                        file=source,
                        hint="start with 'title:', 'reference:' and 'scenes:' "
                        "(see examples/story.yaml)",
                    )
                ]
            )
        data = builder.build(node, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = exc.problem or "syntax error"
        raise StoryError(
            [
                Problem(
                    f"YAML syntax error: {what}",
                    file=source,
                    line=line,
                    hint="check indentation and quoting on this line or the one above",
                )
            ]
        ) from None
    except yaml.YAMLError as exc:
        raise StoryError(
            [Problem(f"YAML error: {exc}", file=source, hint="check the YAML syntax")]
        ) from None
    except RecursionError:
        # PyYAML composes nested collections recursively; thousands of `[[[[` end up here.
        raise StoryError(
            [
                Problem(
                    "the story is nested too deeply to read",
                    file=source,
                    hint=f"a story needs a few levels of nesting; keep it under {MAX_DEPTH}",
                )
            ]
        ) from None
    finally:
        loader.dispose()
    # An anchor with a problem, repeated by aliases, is one problem.
    unique = {(p.line, p.message): p for p in reversed(builder.problems)}
    return data, builder.lines, list(reversed(unique.values()))


class _Builder:
    """Builds plain data from PyYAML's node tree, recording the line of every value by its path.

    Aliases are expanded (the data is then validated like any other), but never without bound:
    :data:`MAX_NODES` caps the expansion and an alias inside its own anchor is refused.
    Merge keys (``<<: *base``) are resolved here too, so that a key given next to a merge
    overrides the merged one instead of being reported as a duplicate.
    """

    def __init__(self, loader: yaml.SafeLoader, source: Path | None) -> None:
        self.loader = loader
        self.source = source
        self.lines: dict[Loc, int] = {}
        self.problems: list[Problem] = []
        self.count = 0
        self.active: set[int] = set()  # collections being built: an alias back to one loops
        self.merged: dict[int, dict[Any, tuple[yaml.Node, yaml.Node]]] = {}

    def _refuse(self, message: str, node: yaml.Node, loc: Loc, hint: str) -> StoryError:
        # An alias's node carries the line of its anchor; the top-level key it sits under is
        # where a reader finds it.
        line = self.lines.get(loc[:1]) if loc else None
        return StoryError(
            [
                Problem(
                    message,
                    file=self.source,
                    line=line or node.start_mark.line + 1,
                    field=format_field(loc) or None,
                    hint=hint,
                )
            ]
        )

    def _enter(self, node: yaml.Node, loc: Loc) -> None:
        if id(node) in self.active:
            raise self._refuse(
                "a YAML alias (*name) refers to a value that contains it, which never ends",
                node,
                loc,
                "an alias can only repeat a value defined outside it",
            )
        if len(loc) > MAX_DEPTH:
            raise self._refuse(
                f"the story nests more than {MAX_DEPTH} levels deep",
                node,
                loc,
                "a story needs a few levels of nesting; check for runaway indentation or aliases",
            )
        self.active.add(id(node))

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise self._refuse(
                f"the story expands to more than {MAX_NODES:,} values "
                "(YAML aliases repeated inside each other multiply)",
                node,
                loc,
                "write the values out, or repeat them with fewer nested aliases (*name)",
            )
        self.lines[loc] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            self._enter(node, loc)
            try:
                return self._mapping(node, loc)
            finally:
                self.active.discard(id(node))
        if isinstance(node, yaml.SequenceNode):
            self._enter(node, loc)
            try:
                return [self.build(item, (*loc, i)) for i, item in enumerate(node.value)]
            finally:
                self.active.discard(id(node))
        return self.loader.construct_object(node, deep=True)

    def _key(self, key_node: yaml.Node, loc: Loc) -> str | int | None:
        key = (
            self.loader.construct_object(key_node, deep=True)
            if isinstance(key_node, yaml.ScalarNode)
            else None
        )
        if isinstance(key, str | int) and not isinstance(key, bool):
            return key
        shown = repr(key) if isinstance(key_node, yaml.ScalarNode) else "a mapping or a list"
        self.problems.append(
            Problem(
                f"keys must be plain names, got {shown}",
                file=self.source,
                line=key_node.start_mark.line + 1,
                field=format_field(loc) or None,
                hint="write keys as names, e.g. `motion:`; quote a key that looks like a number",
            )
        )
        return None

    def _entries(self, node: yaml.MappingNode, loc: Loc) -> dict[Any, tuple[yaml.Node, yaml.Node]]:
        """The mapping's own keys over the keys it merges, each key once (explicit keys win)."""
        merged: dict[Any, tuple[yaml.Node, yaml.Node]] = {}
        explicit: dict[Any, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                for source in self._merge_sources(value_node, loc):
                    for key, pair in self._merged_entries(source, loc).items():
                        merged.setdefault(key, pair)  # YAML: an earlier merged mapping wins
                continue
            key = self._key(key_node, loc)
            if key is None:
                continue
            if key in explicit:
                self.problems.append(
                    Problem(
                        f"duplicate key '{key}' (the later value would silently win)",
                        file=self.source,
                        line=key_node.start_mark.line + 1,
                        field=format_field((*loc, key)),
                        hint="remove one of the two",
                    )
                )
                continue
            explicit[key] = (key_node, value_node)
        return {**merged, **explicit}

    def _merge_sources(self, value_node: yaml.Node, loc: Loc) -> list[yaml.MappingNode]:
        if isinstance(value_node, yaml.MappingNode):
            return [value_node]
        if isinstance(value_node, yaml.SequenceNode) and all(
            isinstance(item, yaml.MappingNode) for item in value_node.value
        ):
            return [item for item in value_node.value if isinstance(item, yaml.MappingNode)]
        raise self._refuse(
            "a merge key (<<) needs a mapping or a list of mappings",
            value_node,
            loc,
            "write `<<: *name` where `&name` marks a mapping",
        )

    def _merged_entries(
        self, node: yaml.MappingNode, loc: Loc
    ) -> dict[Any, tuple[yaml.Node, yaml.Node]]:
        # Memoized: merging the same anchor many times costs its keys once, not once per use.
        if id(node) not in self.merged:
            self._enter(node, loc)
            try:
                self.count += len(node.value)
                self.merged[id(node)] = self._entries(node, loc)
            finally:
                self.active.discard(id(node))
        return self.merged[id(node)]

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[Any, Any]:
        return {
            key: self.build(value_node, (*loc, key))
            for key, (_, value_node) in self._entries(node, loc).items()
        }
