"""``report.html`` from a gathered :class:`~videokit.report.gather.Report`: one self-contained page.

Everything the user wrote (prompts, scene ids, the title) is HTML-escaped, and media are linked by
relative, percent-encoded paths, so the page opens from ``file://`` inside the work dir and after
the work dir is zipped and unpacked elsewhere. The CSS and script are inline; a Content Security
Policy allows that script by its hash and nothing else.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from html import escape
from urllib.parse import quote

from videokit.report.changes import SceneChange
from videokit.report.gather import Block, Film, Previous, Report, SceneView, StageView
from videokit.report.style import CSS, SCRIPT

__all__ = ["render_html"]


def render_html(report: Report) -> str:
    script_hash = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    policy = (
        "default-src 'none'; img-src 'self' file:; media-src 'self' file:; "
        f"style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'"
    )
    title = _e(report.title or "Untitled")
    parts = [
        "<!doctype html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="Content-Security-Policy" content="{_e(policy)}">',
        '<meta name="generator" content="videokit">',
        f"<title>{title} · videokit report</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        '<header class="page">',
        f"<h1>{title}</h1>",
        f'<p class="muted">{_e(_headline(report))}</p>',
        "</header>",
        "<main>",
        *[f'<p class="note">{_e(note)}</p>' for note in report.notes],
        _film_section(report.film),
        _changes_section(report),
        _scenes_section(report),
        _cost_section(report),
        "</main>",
        f"<footer>Written by videokit from manifest.json, updated {_e(_when(report.updated))}"
        "</footer>",
        f"<script>{SCRIPT}</script>",
        "</body>",
        "</html>",
    ]
    return "\n".join(part for part in parts if part) + "\n"


def _headline(report: Report) -> str:
    bits = [f"rendered on the {report.backend or 'unknown'} backend, {_when(report.run_started)}"]
    on = sum(1 for s in report.scenes if not s.branch)
    bits.append(f"{_count(len(report.scenes), 'scene')} ({on} on the timeline)")
    if report.film is not None:
        film = report.film
        bits.append(f"{film.frames} frames, {film.frames / film.fps:.2f} s at {film.fps:g} fps")
    bits.append(f"{_usd(report.run_cost_usd)} spent by this render")
    return " · ".join(bits)


# -- the film and its timeline ----------------------------------------------------------------


def _film_section(film: Film | None) -> str:
    if film is None:
        return ""
    lines = [
        '<section aria-labelledby="film-title">',
        '<h2 id="film-title">The film</h2>',
        '<figure class="film">',
        f'<video id="film" src="{_url(film.path)}" controls preload="metadata" playsinline '
        f'data-fps="{film.fps:g}" data-frames="{film.frames}" width="{film.width}" '
        f'height="{film.height}" aria-describedby="film-formula"></video>',
        f'<figcaption id="film-formula">{_e(film.formula)} · {_e(film.method)} stitch</figcaption>',
        "</figure>",
    ]
    if film.blocks:
        lines += _timeline(film)
    lines.append("</section>")
    return "\n".join(lines)


def _timeline(film: Film) -> list[str]:
    total = film.frames

    def pct(frame: int) -> str:
        return f"{100 * frame / total:.4f}%"

    lines = [
        f'<div id="timeline" class="timeline" role="group" data-frames="{total}" '
        'aria-label="Timeline: each clip to scale; choose one to move the film to its first '
        'frame">',
    ]
    marks: list[str] = []
    for block in film.blocks:
        last = block.start + block.length - 1
        span = f"{block.start / film.fps:.2f}–{(last + 1) / film.fps:.2f} s"
        joins = []
        if block.drop_head:
            joins.append(f"first {_count(block.drop_head, 'frame')} dropped at the seam")
        if block.crossfade:
            joins.append(f"crossfades in over {_count(block.crossfade, 'frame')}")
        label = f"{block.scene}: film frames {block.start}–{last} ({span})"
        label += "".join(f", {j}" for j in joins) + ". Move the film here."
        lines.append(
            f'<button type="button" class="clip" id="block-{_e(block.scene)}" '
            f'style="left:{pct(block.start)};width:{pct(block.length)}{_clear(block, pct)}" '
            f'data-scene="{_e(block.scene)}" data-index="{block.index}" '
            f'data-start-frame="{block.start}" data-frames="{block.length}" '
            f'data-clip-frames="{block.frames}" data-drop-head="{block.drop_head}" '
            f'data-crossfade="{block.crossfade}" aria-label="{_e(label)}" '
            f'title="{_e(label)}">{_e(block.scene)}</button>'
        )
        marks += _marks(block, pct)
    lines += marks
    lines += ['<span id="playhead" class="playhead" aria-hidden="true"></span>', "</div>"]
    lines.append(
        '<ul class="legend">'
        '<li><span class="swatch swatch-seam" aria-hidden="true"></span>seam: a continuous shot\'s '
        "first frame, dropped (it repeats the frame before)</li>"
        '<li><span class="swatch swatch-xfade" aria-hidden="true"></span>crossfade: two clips '
        "overlap</li>"
        "<li>choose a clip to move the film to its first frame</li></ul>"
    )
    return lines


def _clear(block: Block, pct: Callable[[int], str]) -> str:
    """The label starts after a crossfade's hatching (a percentage of padding is one of the
    strip's width, as the block's position is)."""
    return f";padding-left:calc({pct(block.crossfade)} + .35rem)" if block.crossfade else ""


def _marks(block: Block, pct: Callable[[int], str]) -> list[str]:
    marks = []
    if block.drop_head:
        marks.append(
            f'<span class="seam" style="left:{pct(block.start)}" data-scene="{_e(block.scene)}" '
            f'data-frame="{block.start}" data-dropped="{block.drop_head}" '
            'aria-hidden="true"></span>'
        )
    if block.crossfade:
        marks.append(
            f'<span class="xfade" style="left:{pct(block.start)};width:{pct(block.crossfade)}" '
            f'data-scene="{_e(block.scene)}" data-start-frame="{block.start}" '
            f'data-frames="{block.crossfade}" aria-hidden="true"></span>'
        )
    return marks


# -- what changed -------------------------------------------------------------------------------


def _changes_section(report: Report) -> str:
    lines = [
        '<section aria-labelledby="changes-title">',
        '<h2 id="changes-title">Since the previous render</h2>',
    ]
    previous = report.previous
    if previous is None:
        lines.append(
            '<p class="muted">No earlier finished render of this work directory to compare '
            "with: the next render will say what changed since this one.</p>"
        )
        return "\n".join([*lines, "</section>"])
    lines.append(f"<p>Compared with the render started {_e(_when(previous.started))}.</p>")
    changes = report.changes
    if changes:
        lines.append('<ul class="changes">')
        lines += [_change_item(change) for change in changes]
        lines.append("</ul>")
    lines += [f"<p>{_e(text)}</p>" for text in _film_changes(previous, bool(changes))]
    return "\n".join([*lines, "</section>"])


def _change_item(change: SceneChange) -> str:
    how = "re-made" if change.remade else "changed, taken from the cache"
    item = (
        f'<li data-scene="{_e(change.scene)}" data-reasons="{_e(",".join(change.reasons))}">'
        f'<a href="#scene-{_e(change.scene)}">{_e(change.scene)}</a>: {how} '
        f"({_e(', '.join(change.reasons))})"
    )
    if change.details:
        item += "<ul>" + "".join(f"<li>{_e(d)}</li>" for d in change.details) + "</ul>"
    return item + "</li>"


def _film_changes(previous: Previous, scenes_changed: bool) -> list[str]:
    texts = []
    if not scenes_changed:
        texts.append("No scene changed: every one is the same result as then.")
    if previous.removed:
        texts.append(f"Scenes removed from the story: {', '.join(previous.removed)}.")
    if previous.timeline_changed:
        texts.append("The timeline changed (scenes added, removed or reordered).")
    texts.append(
        "The film was stitched anew." if previous.film_changed else "The film is the same file."
    )
    return texts


# -- scenes ---------------------------------------------------------------------------------------


def _scenes_section(report: Report) -> str:
    lines = [
        '<section aria-labelledby="scenes-title">',
        '<h2 id="scenes-title">Scenes</h2>',
        '<div class="cards">',
        *[_card(scene, report.backend) for scene in report.scenes],
        "</div>",
        "</section>",
    ]
    return "\n".join(lines)


def _card(scene: SceneView, backend: str) -> str:
    sid = _e(scene.id)
    badges = [
        f'<span class="badge">#{scene.position + 1} on the timeline</span>'
        if scene.position is not None
        else '<span class="badge branch">branch: not on the timeline</span>',
    ]
    if scene.status != "done":
        badges.append(f'<span class="badge stale">{_e(scene.status)}</span>')
    elif scene.stale:
        badges.append(f'<span class="badge stale">not current: {_e(scene.stale)}</span>')
    elif scene.made_now:
        badges.append('<span class="badge rendered">rendered</span>')
    else:
        badges.append('<span class="badge cached">cached</span>')
    if scene.change is not None:
        badges.append(
            f'<span class="badge changed">changed: {_e(", ".join(scene.change.reasons))}</span>'
        )
    size = _size(scene)
    frames = ""
    if scene.first_frame or scene.last_frame:
        frames = '<div class="frames">' + "".join(
            f'<figure><img src="{_url(path)}" alt="{which} frame of scene {sid}" '
            f'loading="lazy"{size}><figcaption>{which} frame</figcaption></figure>'
            for which, path in (("First", scene.first_frame), ("Last", scene.last_frame))
            if path
        )
        frames += "</div>"
    clip = (
        f'<video class="clip" src="{_url(scene.clip)}" controls preload="metadata" muted '
        f'playsinline{size} aria-label="Clip of scene {sid}"></video>'
        if scene.clip
        else ""
    )
    return "\n".join(
        part
        for part in (
            f'<article class="card" id="scene-{sid}" data-scene="{sid}" '
            f'aria-labelledby="scene-{sid}-title">',
            f'<header><h3 id="scene-{sid}-title">{sid}</h3>{"".join(badges)}</header>',
            frames,
            clip,
            _details(scene, backend),
            "</article>",
        )
        if part
    )


def _details(scene: SceneView, backend: str) -> str:
    rows: list[tuple[str, str]] = []
    if scene.edit is not None:
        rows.append(("Edit prompt", scene.edit.prompt or "—"))
    if scene.animate is not None:
        rows.append(("Motion prompt", scene.animate.prompt or "—"))
    negative = scene.animate.negative_prompt if scene.animate is not None else None
    if negative:
        rows.append(("Negative prompt", negative))
    rows += [("Starts from", scene.source), ("Seed", str(scene.seed))]
    if scene.frames is not None:
        length = f" ({scene.frames / scene.fps:.2f} s at {scene.fps} fps)" if scene.fps else ""
        rows.append(("Frames", f"{scene.frames}{length}"))
    if scene.color is not None:
        rows.append(("Colour", scene.color))
    if scene.seconds is not None:
        rows.append(("Time taken", f"{scene.seconds:.2f} s"))
    rows.append(("Cost", _usd(scene.cost_usd)))
    if scene.error:
        rows.append(("Error", scene.error))
    if scene.change is not None and scene.change.details:
        rows.append(("What changed", "; ".join(scene.change.details)))
    body = "".join(f"<dt>{_e(name)}</dt><dd>{_e(value)}</dd>" for name, value in rows)
    return f"<dl>{body}</dl>" + _stage_table(scene, backend)


def _stage_table(scene: SceneView, backend: str) -> str:
    """Per stage: where it ran, by which model, whether this render made it, at what cost."""
    stages = scene.stages
    if not stages:
        return ""
    rows: dict[str, list[str]] = {
        "Result": [_made(s) for s in stages],
        "Endpoint": [s.endpoint or f"{backend} backend" for s in stages],
        "Model": [s.model or "not recorded" for s in stages],
        "Attempts": [_attempts(s) for s in stages],
        "Job time": [f"{s.seconds:.2f} s" if s.seconds is not None else "—" for s in stages],
        "Cost": [_usd(s.cost_usd) for s in stages],
    }
    head = "".join(f'<th scope="col">{s.stage.capitalize()}</th>' for s in stages)
    body = "".join(
        f'<tr><th scope="row">{name}</th>' + "".join(f"<td>{_e(v)}</td>" for v in values) + "</tr>"
        for name, values in rows.items()
    )
    return (
        f'<table class="stages"><caption class="visually-hidden">Stages of scene '
        f"{_e(scene.id)}</caption><thead><tr><td></td>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def _made(stage: StageView) -> str:
    if stage.status != "done":
        return stage.status  # failed, cancelled, or still running on the endpoint (submitted)
    if stage.made_now:
        # Cached and made by this run: a render that continued an interrupted one of its own.
        return "rendered (resumed)" if stage.cached else "rendered"
    return "cached" if stage.cached else "earlier render"


def _attempts(stage: StageView) -> str:
    if not stage.attempts:
        return "none"  # an in-process job, or a result from the cache that recorded none
    states = ", ".join(a.status for a in stage.attempts)
    return f"{len(stage.attempts)} ({states})"


def _size(scene: SceneView) -> str:
    """Width and height attributes: the browser keeps the space before the media load."""
    if scene.width is None or scene.height is None:
        return ""
    return f' width="{scene.width}" height="{scene.height}"'


# -- cost ------------------------------------------------------------------------------------------


def _cost_section(report: Report) -> str:
    rows = []
    top = max((s.cost_usd for s in report.scenes), default=0.0)
    totals = {"edit": 0.0, "animate": 0.0}
    for scene in report.scenes:
        costs = {s.stage: s.cost_usd for s in scene.stages}
        for stage, value in costs.items():
            totals[stage] += value
        bar = "".join(
            f'<span class="{stage}" style="width:{100 * value / top:.2f}%"></span>'
            for stage, value in costs.items()
            if top > 0 and value > 0
        )
        cells = "".join(
            f"<td>{_usd(costs[stage]) if stage in costs else '—'}</td>"
            for stage in ("edit", "animate")
        )
        rows.append(
            f'<tr data-scene="{_e(scene.id)}"><th scope="row">{_e(scene.id)}</th>{cells}'
            f"<td>{_usd(scene.cost_usd)}</td>"
            f'<td class="chart"><div class="bar" aria-hidden="true">{bar}</div></td></tr>'
        )
    total = sum(totals.values())
    spent = f"This render spent {_usd(report.run_cost_usd)}"
    if report.warmup_usd:
        spent += f", {_usd(report.warmup_usd)} of it on warm-up jobs"
    if report.billed_usd is not None and report.billed_usd > report.run_cost_usd + 1e-9:
        spent += f"; about {_usd(report.billed_usd)} billed with worker start and idle time"
    spent += "."
    if report.backend == "preview":
        spent += " The preview backend renders on this computer, for free."
    return "\n".join(
        [
            '<section aria-labelledby="cost-title">',
            '<h2 id="cost-title">Cost</h2>',
            '<div class="table-wrap"><table class="costs">',
            "<caption>What each scene's current result cost, by stage (a cached result keeps "
            'the cost of the render that made it). <span class="swatch swatch-edit" '
            'aria-hidden="true"></span>edit <span class="swatch swatch-animate" '
            'aria-hidden="true"></span>animate</caption>',
            '<thead><tr><th scope="col">Scene</th><th scope="col">Edit</th>'
            '<th scope="col">Animate</th><th scope="col">Total</th>'
            '<th scope="col" class="chart"><span class="visually-hidden">Share</span></th>'
            "</tr></thead>",
            "<tbody>",
            *rows,
            "</tbody>",
            f'<tfoot><tr><th scope="row">Total</th><td>{_usd(totals["edit"])}</td>'
            f'<td>{_usd(totals["animate"])}</td><td>{_usd(total)}</td><td class="chart"></td>'
            "</tr></tfoot>",
            "</table></div>",
            f"<p>{_e(spent)}</p>",
            "</section>",
        ]
    )


# -- formatting ------------------------------------------------------------------------------------


def _e(text: str) -> str:
    return escape(text, quote=True)


def _when(stamp: str) -> str:
    """``2026-12-07T08:44:45+00:00`` as ``2026-12-07 08:44 UTC`` (the manifest's times are UTC)."""
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return stamp or "at an unknown time"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _url(path: str) -> str:
    """A relative path as an attribute value: percent-encoded (``#``, ``?``, spaces), escaped."""
    return _e(quote(path, safe="/"))


def _usd(amount: float) -> str:
    return f"${amount:.4f}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
