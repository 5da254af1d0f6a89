"""Collecting the problems and warnings found while planning, each located in the story file."""

from __future__ import annotations

from videokit.errors import Problem
from videokit.story.field_paths import format_field
from videokit.story.model import Story

__all__ = ["ProblemCollector"]


class ProblemCollector:
    """Problems (any one stops the plan) and warnings (each said once) about ``story``."""

    def __init__(self, story: Story) -> None:
        self.story = story
        self.problems: list[Problem] = []
        self.warnings: list[str] = []

    def _problem(
        self, message: str, loc: tuple[str | int, ...], scene: str | None, hint: str | None
    ) -> Problem:
        return Problem(
            message,
            file=self.story.source,
            line=self.story.line_of(loc),
            field=format_field(loc) or None,
            scene=scene,
            hint=hint,
        )

    def add(
        self,
        message: str,
        loc: tuple[str | int, ...],
        *,
        scene: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.problems.append(self._problem(message, loc, scene, hint))

    def warn(
        self,
        message: str,
        loc: tuple[str | int, ...],
        *,
        scene: str | None = None,
        hint: str | None = None,
    ) -> None:
        text = self._problem(message, loc, scene, hint).render()
        if text not in self.warnings:  # a default that misfires for every scene is said once
            self.warnings.append(text)
