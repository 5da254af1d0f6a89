"""Loading stories from YAML with errors that point at the line, the field and the scene.

The entry points: :func:`load_story` reads a file, :func:`parse_story` turns text into a
:class:`~videokit.story.model.Story`. Positions come from :mod:`videokit.story.yaml_lines`,
located schema problems from :mod:`videokit.story.schema_problems`; when there are problems, a
salvaged copy (:mod:`videokit.story.salvage`) is planned too, so that one run reports everything.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from pydantic import ValidationError

from videokit.errors import Problem, StoryError
from videokit.story.field_paths import format_field
from videokit.story.model import Story
from videokit.story.plan import problems_with_plan
from videokit.story.salvage import salvage_story
from videokit.story.schema_problems import problems_from_validation
from videokit.story.yaml_lines import compose_with_lines

__all__ = ["format_field", "load_story", "parse_story", "problems_from_validation"]

MAX_STORY_BYTES = 2_000_000


def load_story(path: str | Path) -> Story:
    """Read, parse and validate the schema of a story file. Raises :class:`StoryError`."""
    path = Path(path)
    if not path.exists():
        raise StoryError([Problem("story file not found", file=path, hint="check the path")])
    if path.is_dir():
        raise StoryError(
            [
                Problem(
                    "this is a directory, not a story file",
                    file=path,
                    hint="give the YAML file inside it, e.g. story.yaml",
                )
            ]
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise StoryError(
            [
                Problem(
                    f"cannot read the story file: {exc.strerror}",
                    file=path,
                    hint="check the file's permissions",
                )
            ]
        ) from exc
    if len(raw) > MAX_STORY_BYTES:
        raise StoryError(
            [
                Problem(
                    f"story file is over {MAX_STORY_BYTES:,} bytes",
                    file=path,
                    hint="a story is a short YAML file; images and audio go in files it names",
                )
            ]
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StoryError(
            [Problem("story file is not UTF-8 text", file=path, hint="save it as UTF-8 YAML")]
        ) from exc
    return parse_story(text, source=path)


def parse_story(text: str, *, source: Path | None = None, base_dir: Path | None = None) -> Story:
    """Parse YAML text into a :class:`Story`; relative paths resolve against ``base_dir``.

    A story with no ``title`` is named after its file (``robbie-dresses-up.yaml`` -> ``robbie
    dresses up``), else after its first scene. Raises :class:`StoryError` with every problem
    found: when the text has any, the checks of planning (``from`` references, files, ...) are
    run as far as they can be, and their problems are reported in the same error.
    """
    base = base_dir or (source.resolve().parent if source is not None else Path.cwd())
    data, lines, found = compose_with_lines(text, source)
    if not isinstance(data, dict):
        raise StoryError(
            [
                Problem(
                    "a story must be a YAML mapping",
                    file=source,
                    line=lines.get((), None),
                    hint="start with 'title:', 'reference:' and 'scenes:' (see `videokit schema`)",
                )
            ]
        )
    covered: list[str] = []
    labels: dict[str, str] = {}
    story: Story | None
    try:
        story = Story.model_validate(data)
    except ValidationError as exc:
        schema = problems_from_validation(exc, data, lines, source)
        found += schema
        covered = [p.field for p in schema if p.field]
        story, labels = salvage_story(data)
    if story is not None:
        if "title" not in data and source is not None:
            story.set_default_title(_title_of(source) or story.title)
        story.with_origin(source=source, base_dir=base, lines=lines)
    if not found:
        assert story is not None
        return story
    problems = problems_with_plan(found, story, covered=covered)
    # A scene known by a placeholder id is shown as the schema problems show it: #<n>.
    raise StoryError(
        [
            dataclasses.replace(p, scene=labels[p.scene]) if p.scene in labels else p
            for p in problems
        ]
    )


def _title_of(source: Path) -> str:
    """``robbie-dresses-up.yaml`` -> ``robbie dresses up``."""
    return " ".join(re.split(r"[-_\s]+", source.stem)).strip()[:200]
