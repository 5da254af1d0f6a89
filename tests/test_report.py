"""report.html: what a render's report gathers and how it writes it, on real renders (the preview
backend, real ffmpeg). The browser's view of it is tests/test_report_browser.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

import videokit
from tests.conftest import RecordingBackend
from videokit.cli.progress import summary_line
from videokit.media.probe import probe_video
from videokit.pipeline.events import Event, RenderDone
from videokit.pipeline.manifest import Manifest
from videokit.report import gather, load_facts, write_report
from videokit.report.gather import blocks_of
from videokit.report.html import render_html

# A continuous shot (c after b, no edit), a crossfade (c into d), an edit and a branch (alt).
STORY = """
title: Branches & <Friends>
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

HOSTILE = """<script>alert("x")</script> & 'quotes' <img src=x onerror=alert(1)>"""


class Page(HTMLParser):
    """Every element's tag and attributes, and the text inside chosen ones, in document order."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {name: value or "" for name, value in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def all(self, tag: str, **wanted: str) -> list[dict[str, str]]:
        return [
            attrs
            for name, attrs in self.elements
            if name == tag and all(attrs.get(k.replace("_", "-")) == v for k, v in wanted.items())
        ]

    def with_class(self, tag: str, cls: str) -> list[dict[str, str]]:
        return [a for a in self.all(tag) if cls in a.get("class", "").split()]


def render(
    story: Path, backend: RecordingBackend, events: list[Event] | None = None, **kwargs: object
) -> videokit.RenderResult:
    return videokit.Pipeline(
        story,
        backend=backend,
        out=story.parent / "out",
        on_event=events.append if events is not None else None,
        **kwargs,  # type: ignore[arg-type]
    ).run()


def page_of(workdir: Path) -> tuple[str, Page]:
    html = (workdir / "report.html").read_text(encoding="utf-8")
    return html, Page(html)


def media_paths(page: Page) -> list[str]:
    return [a["src"] for tag in ("video", "img") for a in page.all(tag)]


@pytest.fixture
def rendered(
    write_story: Callable[..., Path], recording: RecordingBackend
) -> tuple[Path, videokit.RenderResult, list[Event]]:
    story = write_story(STORY)
    events: list[Event] = []
    return story, render(story, recording, events), events


def test_a_render_writes_the_report_beside_the_film_and_names_it_when_done(
    rendered: tuple[Path, videokit.RenderResult, list[Event]],
) -> None:
    _, result, events = rendered
    report = result.workdir / "report.html"
    assert result.report == report  # the Python result names it too
    (done,) = [e for e in events if isinstance(e, RenderDone)]
    assert done.report == str(report)
    assert f"report {report}" in summary_line(done, cwd=Path("/elsewhere"))
    assert "· report out/report.html ·" in summary_line(done, cwd=result.workdir.parent)
    html, page = page_of(result.workdir)
    assert html.startswith("<!doctype html>")
    # Self-contained: no stylesheet, script or media from anywhere but the work dir.
    assert not page.all("link")
    assert [a for a in page.all("script") if "src" in a] == []
    assert "http://" not in html and "https://" not in html
    (film,) = page.all("video", id="film")
    assert film["src"] == "final.mp4" and film["data-fps"] == "8"
    assert film["data-frames"] == str(probe_video(result.workdir / "final.mp4").frames)


def test_media_are_linked_relative_to_the_report_and_survive_a_move(
    rendered: tuple[Path, videokit.RenderResult, list[Event]], tmp_path: Path
) -> None:
    _, result, _ = rendered
    _, page = page_of(result.workdir)
    paths = media_paths(page)
    # The film, and per scene a clip, its first and last frame.
    assert len(paths) == 1 + 5 * 3
    for path in paths:
        assert not os.path.isabs(path) and ":" not in path, path
        assert (result.workdir / unquote(path)).is_file(), path
    # Zipped and unpacked elsewhere (copied: hard links become files), then written again.
    moved = tmp_path / "shared" / "robbie"
    shutil.copytree(result.workdir, moved)
    shutil.rmtree(result.workdir)
    write_report(moved)
    _, again = page_of(moved)
    assert media_paths(again) == paths
    assert all((moved / unquote(p)).is_file() for p in paths)


def test_the_timeline_places_each_clip_with_its_seam_and_crossfade(
    rendered: tuple[Path, videokit.RenderResult, list[Event]],
) -> None:
    story, result, _ = rendered
    plan = videokit.Pipeline(story).plan()
    _, page = page_of(result.workdir)
    blocks = page.with_class("button", "clip")
    assert [b["data-scene"] for b in blocks] == ["a", "b", "c", "d"]
    # a 9, b 9, c 9 - 1 seam, d 9 crossfading 2 frames (0.25 s at 8 fps) into c's tail.
    assert [(int(b["data-start-frame"]), int(b["data-frames"])) for b in blocks] == [
        (0, 9),
        (9, 9),
        (18, 8),
        (24, 9),
    ]
    assert plan.final_frames == 33 == probe_video(result.workdir / "final.mp4").frames
    (seam,) = page.with_class("span", "seam")
    assert (seam["data-scene"], seam["data-frame"], seam["data-dropped"]) == ("c", "18", "1")
    (fade,) = page.with_class("span", "xfade")
    assert (fade["data-scene"], fade["data-start-frame"], fade["data-frames"]) == ("d", "24", "2")
    # Drawn to scale: left and width are the frames' share of the film.
    assert "left:72.7273%;width:27.2727%" in blocks[3]["style"]
    for block in blocks:
        assert block["aria-label"].startswith(f"{block['data-scene']}: film frames")


def test_a_film_outside_the_work_dir_is_linked_relative_and_noted(
    write_story: Callable[..., Path], recording: RecordingBackend
) -> None:
    story = write_story(STORY)
    film = story.parent / "films" / "branches.mp4"
    result = render(story, recording, output=film)
    _, page = page_of(result.workdir)
    (shown,) = page.all("video", id="film")
    assert shown["src"] == "../films/branches.mp4"
    assert (result.workdir / shown["src"]).resolve() == film.resolve()
    assert any("outside the work directory" in note for note in gather(result.workdir).notes)


def test_blocks_add_up_to_the_stitch_arithmetic() -> None:
    from videokit.report import ClipJoin

    joins = [
        ClipJoin(scene="a", frames=49),
        ClipJoin(scene="b", frames=49, drop_head=1),
        ClipJoin(scene="c", frames=41, crossfade=8),
        ClipJoin(scene="d", frames=17, drop_head=1, crossfade=4),
    ]
    blocks = blocks_of(joins)
    assert [(b.start, b.length) for b in blocks] == [(0, 49), (49, 48), (89, 41), (126, 16)]
    end = blocks[-1].start + blocks[-1].length
    assert end == sum(j.frames - j.drop_head for j in joins) - sum(j.crossfade for j in joins)


def test_scene_cards_show_prompts_seeds_models_and_mark_the_branch(
    rendered: tuple[Path, videokit.RenderResult, list[Event]],
) -> None:
    story, result, _ = rendered
    plan = videokit.Pipeline(story).plan()
    report = gather(result.workdir)
    by_id = {s.id: s for s in report.scenes}
    assert list(by_id) == ["a", "b", "c", "d", "alt"]  # the timeline first, then branches
    assert by_id["alt"].branch and not by_id["d"].branch
    b = by_id["b"]
    assert b.edit is not None and b.animate is not None
    assert (b.edit.prompt, b.animate.prompt) == ("now at night", "lights flicker")
    assert b.seed == plan.scenes["b"].seed and b.frames == 9 and b.fps == 8
    assert b.edit.model == "preview/storyboard@2" and b.animate.model == "preview/animatic@2"
    assert b.made_now and not b.animate.cached
    _, page = page_of(result.workdir)
    (alt,) = page.all("article", data_scene="alt")
    assert alt["aria-labelledby"] == "scene-alt-title"
    text = " ".join(page.text)
    assert "branch: not on the timeline" in text and "#4 on the timeline" in text
    alts = {a["alt"] for a in page.all("img")}
    assert {"First frame of scene b", "Last frame of scene alt"} <= alts


def test_user_text_is_escaped(
    write_story: Callable[..., Path], recording: RecordingBackend
) -> None:
    # A JSON string is a YAML string: quotes and all.
    story = write_story(STORY.replace("motion: lights flicker", f"motion: {json.dumps(HOSTILE)}"))
    result = render(story, recording)
    html, page = page_of(result.workdir)
    assert "<script>alert" not in html and "<img src=x" not in html
    assert len(page.all("script")) == 1  # the report's own
    assert HOSTILE in page.text  # shown as the text it is
    assert "Branches &amp; &lt;Friends&gt;" in html  # the title too


def test_a_second_render_takes_every_scene_from_the_cache_and_says_nothing_changed(
    rendered: tuple[Path, videokit.RenderResult, list[Event]], recording: RecordingBackend
) -> None:
    story, first, _ = rendered
    recording.calls.clear()
    (first.workdir / "report.html").unlink()
    render(story, recording)
    assert recording.calls == []
    report = gather(first.workdir)
    assert all(not s.made_now and s.stages for s in report.scenes)
    assert all(stage.cached for s in report.scenes for stage in s.stages)
    assert report.previous is not None and report.changes == ()
    assert not report.previous.film_changed
    _, page = page_of(first.workdir)
    assert len(page.with_class("span", "cached")) == 5
    assert "No scene changed: every one is the same result as then." in page.text


def test_changes_say_which_scenes_were_re_made_and_why(
    rendered: tuple[Path, videokit.RenderResult, list[Event]], recording: RecordingBackend
) -> None:
    story, result, _ = rendered
    # A new seed for b's animation (its edit keeps seed 5) changes b's last frame, which c
    # starts from; alt's motion prompt changes.
    story.write_text(
        STORY.replace("motion: lights flicker", "motion: lights flicker\n    seed: 99").replace(
            "motion: another path", "motion: another way"
        )
    )
    render(story, recording)
    changes = {c.scene: c for c in gather(result.workdir).changes}
    assert set(changes) == {"b", "c", "alt"}
    assert all(c.remade for c in changes.values())
    assert changes["b"].reasons == ("seed",)
    assert changes["b"].details[0].startswith("animate seed ")
    assert changes["c"].reasons == ("input frame",)
    assert changes["alt"].reasons == ("prompt",)
    assert changes["alt"].details == ("motion prompt: “another path” → “another way”",)
    _, page = page_of(result.workdir)
    items = {li["data-scene"]: li["data-reasons"] for li in page.all("li") if "data-scene" in li}
    assert items == {"b": "seed", "c": "input frame", "alt": "prompt"}

    # --only a: forced. Back to alt's first prompt: its old result comes from the cache.
    story.write_text(
        STORY.replace("motion: lights flicker", "motion: lights flicker\n    seed: 99")
    )
    render(story, recording, only=["a", "alt"])
    changes = {c.scene: c for c in gather(result.workdir).changes}
    assert changes["a"].reasons == ("forced",) and changes["a"].remade
    assert changes["alt"].reasons == ("prompt", "forced") and changes["alt"].remade
    render(story, recording)  # now without --only: alt is the cached result of then
    story.write_text(
        STORY.replace("motion: lights flicker", "motion: lights flicker\n    seed: 99").replace(
            "motion: another path", "motion: another way"
        )
    )
    render(story, recording)
    changes = {c.scene: c for c in gather(result.workdir).changes}
    assert set(changes) == {"alt"}
    assert changes["alt"].reasons == ("prompt",) and not changes["alt"].remade
    assert "changed, taken from the cache" in " ".join(page_of(result.workdir)[1].text)


def test_changes_name_new_and_removed_scenes_settings_and_an_edits_own_seed(
    rendered: tuple[Path, videokit.RenderResult, list[Event]], recording: RecordingBackend
) -> None:
    story, result, _ = rendered
    changed = (
        STORY.replace("  - id: alt\n    from: a\n    motion: another path\n", "")
        .replace("motion: the camera drifts", "motion: the camera drifts\n    frames: 13")
        .replace("seed: 5}", "seed: 6}")
        .replace(
            "timeline: [a, b, c, d]", "  - id: e\n    motion: the end\ntimeline: [a, b, c, d, e]"
        )
    )
    story.write_text(changed)
    render(story, recording)
    report = gather(result.workdir)
    changes = {c.scene: c for c in report.changes}
    assert changes["e"].reasons == ("new scene",)
    assert changes["a"].reasons == ("settings",)
    assert changes["a"].details == ("animate frames: 9 → 13",)
    assert "seed" in changes["b"].reasons and "edit seed 5 → 6" in changes["b"].details
    assert report.previous is not None and report.previous.removed == ("alt",)
    assert report.previous.timeline_changed and report.previous.film_changed
    text = page_of(result.workdir)[1].text
    assert "Scenes removed from the story: alt." in text
    assert "The timeline changed (scenes added, removed or reordered)." in text


def test_a_stale_scene_is_shown_as_not_current_and_the_old_films_timeline_kept(
    rendered: tuple[Path, videokit.RenderResult, list[Event]], recording: RecordingBackend
) -> None:
    story, result, _ = rendered
    before = load_facts(result.workdir)
    assert before is not None and before.timeline
    # --only b with a new seed: c (after b) has no cached result for its new input: stale, and
    # the film is not stitched again, so its timeline is still the earlier render's.
    story.write_text(
        STORY.replace("motion: lights flicker", "motion: lights flicker\n    seed: 99")
    )
    done = render(story, recording, only=["b"])
    assert done.final_video is None and done.stale == ["c"]
    facts = load_facts(result.workdir)
    assert facts is not None and facts.stale.keys() == {"c"}
    assert facts.timeline == before.timeline and facts.film_key == before.film_key
    report = gather(result.workdir)
    (c,) = [s for s in report.scenes if s.id == "c"]
    assert c.stale == "its input changed and no cached result matches"
    assert report.film is not None and len(report.film.blocks) == 4
    assert f"not current: {c.stale}" in page_of(result.workdir)[1].text


def test_after_a_failed_render_the_report_shows_the_film_it_left_and_the_failure(
    rendered: tuple[Path, videokit.RenderResult, list[Event]], recording: RecordingBackend
) -> None:
    story, result, _ = rendered
    story.write_text(STORY.replace("motion: from the edited frame", "motion: it fails"))
    recording.fail = {"d"}
    with pytest.raises(videokit.RenderError):
        render(story, recording)
    report = gather(result.workdir)  # what `videokit report` shows now
    assert any("did not finish" in note for note in report.notes)
    # The film on disk is the first render's, and so is the timeline that places its clips.
    assert report.film is not None and [b.scene for b in report.film.blocks] == list("abcd")
    (d,) = [s for s in report.scenes if s.id == "d"]
    assert d.status == "failed" and d.error == "injected failure in d"
    assert d.clip is None and d.animate is not None and d.animate.model is None
    html = render_html(report)
    assert "injected failure in d" in html and '<span class="badge stale">failed</span>' in html
    assert '<tr><th scope="row">Result</th><td>failed</td></tr>' in html


def test_the_cost_chart_draws_each_scene_and_stage_to_scale(
    rendered: tuple[Path, videokit.RenderResult, list[Event]],
) -> None:
    _, result, _ = rendered
    path = result.workdir / "manifest.json"
    manifest = Manifest.load(path)
    # What RunPod would have charged: the figures the manifest records for paid jobs.
    paid = {("b", "edit"): 0.01, ("b", "animate"): 0.03, ("c", "animate"): 0.02}
    for (scene, stage), usd in paid.items():
        record = getattr(manifest.scenes[scene], stage)
        record.cost_usd = usd
    manifest.run_cost_usd = 0.06
    manifest.backend = "runpod"
    manifest.save(path)
    write_report(result.workdir)
    html, page = page_of(result.workdir)
    rows = {r["data-scene"] for r in page.all("tr") if "data-scene" in r}
    assert rows == {"a", "b", "c", "d", "alt"}
    bars = [a["style"] for a in page.all("span") if a.get("class") in ("edit", "animate")]
    # b is the costliest scene ($0.04): its bar fills the width, c's half of it.
    assert bars == ["width:25.00%", "width:75.00%", "width:50.00%"]
    assert "<td>$0.0100</td><td>$0.0500</td><td>$0.0600</td>" in html  # the totals row
    assert "This render spent $0.0600." in page.text


def test_a_report_that_cannot_be_written_is_a_warning_not_a_failed_render(
    write_story: Callable[..., Path], recording: RecordingBackend
) -> None:
    story = write_story(STORY)
    (story.parent / "out" / "report.html").mkdir(parents=True)  # in the way of the file
    events: list[Event] = []
    result = render(story, recording, events)
    assert result.final_video is not None and result.final_video.is_file()
    (done,) = [e for e in events if isinstance(e, RenderDone)]
    assert done.report is None
    assert any(w.startswith("report.html was not written") for w in result.warnings)


def test_a_work_dir_without_recorded_facts_still_gets_a_report(
    rendered: tuple[Path, videokit.RenderResult, list[Event]],
) -> None:
    _, result, _ = rendered
    shutil.rmtree(result.workdir / "report")  # as an older videokit left it
    report = gather(result.workdir)
    assert report.film is not None and report.film.blocks == ()
    assert any("timeline" in note for note in report.notes)
    assert 'id="timeline"' not in render_html(report)


# -- the command --------------------------------------------------------------------------------


def videokit_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "videokit", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, **env},
    )


def test_the_report_command_writes_prints_and_opens_it(
    rendered: tuple[Path, videokit.RenderResult, list[Event]], tmp_path: Path
) -> None:
    _, result, _ = rendered
    report = result.workdir / "report.html"
    report.unlink()
    plain = videokit_cli("report", cwd=result.workdir)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == f"{report}\n" and plain.stderr == "" and report.is_file()
    # $BROWSER is the browser webbrowser starts: here, a script that notes the URL it got.
    seen = tmp_path / "opened.txt"
    browser = f"{sys.executable} -c \"import sys; open('{seen}', 'w').write(sys.argv[1])\" %s"
    opened = videokit_cli(
        "report", str(result.workdir), "--open", "--json", cwd=tmp_path, BROWSER=browser
    )
    assert opened.returncode == 0, opened.stderr
    assert json.loads(opened.stdout) == {
        "type": "report",
        "ok": True,
        "path": str(report),
        "opened": True,
    }
    assert seen.read_text() == report.as_uri()


def test_the_report_command_refuses_a_folder_that_is_no_work_dir(tmp_path: Path) -> None:
    failed = videokit_cli("report", str(tmp_path), "--json", cwd=tmp_path)
    assert failed.returncode == 2
    assert "Traceback" not in failed.stderr
    assert f"error: {tmp_path / 'manifest.json'} not found" in failed.stderr
    assert json.loads(failed.stdout)["error"] == "ConfigError"


def test_render_json_names_the_report_in_render_done(
    write_story: Callable[..., Path], tmp_path: Path
) -> None:
    story = write_story(STORY)
    out = tmp_path / "cli-out"
    done = videokit_cli("render", str(story), "--out", str(out), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    last = json.loads(done.stdout.splitlines()[-1])
    assert last["type"] == "render_done" and last["report"] == str(out / "report.html")


def test_the_report_command_teaches_its_use_in_its_help() -> None:
    helped = videokit_cli("report", "--help", cwd=Path.cwd(), COLUMNS="120")
    assert helped.returncode == 0, helped.stderr
    assert "Usage: videokit report [OPTIONS] [WORKDIR]" in helped.stdout
    assert "Examples" in helped.stdout and "videokit report out/story --open" in helped.stdout
    for flag in ("--open", "--json", "--quiet", "--verbose"):
        assert flag in helped.stdout
    assert "report" in videokit_cli("--help", cwd=Path.cwd(), COLUMNS="120").stdout
