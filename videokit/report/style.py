"""The report's CSS and script, inlined into ``report.html`` (no network, no framework).

The script only wires the timeline strip to the film: a block seeks the film to its clip's first
frame, and a playhead follows playback. Without it the page still shows everything.
"""

from __future__ import annotations

__all__ = ["CSS", "SCRIPT"]

CSS = """
:root {
  color-scheme: light dark;
  --bg: #f7f7f8; --fg: #1d1d22; --muted: #5d5d66; --card: #fff; --line: #d7d7de;
  --edit: #7b4fd6; --animate: #1f7ae0; --seam: #d9480f; --fade: #e8a400; --focus: #0b57d0;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #16161a; --fg: #ececf1; --muted: #a5a5b0; --card: #202026; --line: #3a3a44;
    --edit: #a884f3; --animate: #5aa2f5; --seam: #ff7a45; --fade: #ffc53d; --focus: #8ab4f8;
  }
}
* { box-sizing: border-box; }
body {
  margin: 0; background: var(--bg); color: var(--fg);
  font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
}
header.page, main { max-width: 1200px; margin: 0 auto; padding: 0 1rem; }
header.page { padding-top: 1.5rem; }
h1 { margin: 0 0 .25rem; font-size: 1.75rem; overflow-wrap: anywhere; }
h2 { margin: 2rem 0 .75rem; font-size: 1.3rem; }
h3 { margin: 0; font-size: 1.1rem; overflow-wrap: anywhere; }
.muted, figcaption, caption { color: var(--muted); }
.note { border-left: 4px solid var(--fade); padding: .25rem .75rem; background: var(--card); }
video, img { display: block; width: 100%; height: auto; background: #000; border-radius: 6px; }
figure { margin: 0; }
.film video { max-height: 70vh; object-fit: contain; }
.film figcaption { font-variant-numeric: tabular-nums; margin-top: .25rem; }
.timeline {
  position: relative; height: 3.25rem; margin: .75rem 0 .25rem;
  background: var(--card); border: 1px solid var(--line); border-radius: 6px;
}
.timeline .clip {
  position: absolute; top: .35rem; bottom: .35rem; min-width: 2px; padding: 0 .35rem;
  overflow: hidden; white-space: nowrap; text-overflow: ellipsis; text-align: left;
  font: inherit; font-size: .85rem; color: #fff; cursor: pointer;
  background: var(--animate); border: 1px solid rgba(0, 0, 0, .35); border-radius: 4px;
}
.timeline .clip:nth-of-type(even) { background: var(--edit); }
.timeline .clip[aria-current="true"] { outline: 3px solid var(--fg); outline-offset: -3px; }
.timeline .clip:focus-visible { outline: 3px solid var(--focus); outline-offset: 2px; z-index: 3; }
.timeline .xfade {
  position: absolute; top: 0; bottom: 0; z-index: 1; pointer-events: none; min-width: 3px;
  background: repeating-linear-gradient(135deg, var(--fade) 0 4px, transparent 4px 8px);
  opacity: .9;
}
.timeline .seam {
  position: absolute; top: -.3rem; bottom: -.3rem; width: 3px; margin-left: -1px; z-index: 2;
  pointer-events: none; background: var(--seam);
}
.timeline .playhead {
  position: absolute; top: -.4rem; bottom: -.4rem; width: 2px; z-index: 4;
  pointer-events: none; background: var(--fg);
}
.legend { display: flex; flex-wrap: wrap; gap: .25rem 1.25rem; padding: 0; margin: 0;
  list-style: none; font-size: .9rem; color: var(--muted); }
.swatch { display: inline-block; width: 1rem; height: .8rem; margin-right: .35rem;
  vertical-align: -.1rem; border-radius: 2px; }
.swatch.swatch-seam { background: var(--seam); width: 3px; }
.swatch-xfade {
  background: repeating-linear-gradient(135deg, var(--fade) 0 3px, transparent 3px 6px);
}
.swatch-edit { background: var(--edit); }
.swatch-animate { background: var(--animate); }
.cards {
  display: grid; gap: 1rem;
  grid-template-columns: repeat(auto-fill, minmax(min(100%, 22rem), 1fr));
}
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 1rem;
  display: flex; flex-direction: column; gap: .75rem; min-width: 0; }
.card > header { display: flex; flex-wrap: wrap; align-items: baseline; gap: .4rem; }
.badge {
  font-size: .8rem; padding: .05rem .5rem; border-radius: 999px; border: 1px solid var(--line);
}
.badge.rendered { border-color: var(--animate); }
.badge.branch, .badge.stale, .badge.changed { border-color: var(--fade); }
.frames { display: grid; grid-template-columns: 1fr 1fr; gap: .5rem; }
.frames figcaption { font-size: .85rem; }
dl {
  display: grid; grid-template-columns: max-content 1fr; gap: .2rem .75rem; margin: 0;
  font-size: .92rem;
}
dt { color: var(--muted); }
dd { margin: 0; overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
caption { text-align: left; padding-bottom: .5rem; }
th, td { padding: .35rem .5rem; border-bottom: 1px solid var(--line); text-align: right; }
th[scope="row"], thead th:first-child { text-align: left; overflow-wrap: anywhere; }
td.chart { width: 40%; }
table.stages { font-size: .85rem; }
table.stages td, table.stages th {
  padding: .2rem .4rem; text-align: left; overflow-wrap: anywhere;
}
table.stages th[scope="row"] { overflow-wrap: normal; white-space: nowrap; }
.bar { display: flex; height: .9rem; background: var(--bg); border-radius: 3px; overflow: hidden; }
.bar .edit { background: var(--edit); }
.bar .animate { background: var(--animate); }
.table-wrap { overflow-x: auto; }
.changes li { margin-bottom: .4rem; }
footer {
  max-width: 1200px; margin: 2rem auto; padding: 0 1rem; color: var(--muted); font-size: .85rem;
}
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden;
  clip: rect(0 0 0 0); white-space: nowrap; }
a { color: var(--focus); }
:focus-visible { outline: 3px solid var(--focus); outline-offset: 2px; }
@media (max-width: 600px) {
  h1 { font-size: 1.4rem; }
  td.chart { display: none; }
  .timeline .clip { font-size: .75rem; padding: 0 .15rem; }
}
"""

SCRIPT = """
(function () {
  "use strict";
  var film = document.getElementById("film");
  var strip = document.getElementById("timeline");
  if (!film || !strip) { return; }
  var fps = Number(film.dataset.fps);
  var total = Number(strip.dataset.frames);
  var blocks = Array.prototype.slice.call(strip.querySelectorAll("button.clip"));
  var head = document.getElementById("playhead");
  blocks.forEach(function (block) {
    // A <button>: Enter and Space click it too.
    block.addEventListener("click", function () {
      // The middle of the frame: its exact start time can round to the frame before.
      film.currentTime = (Number(block.dataset.startFrame) + 0.5) / fps;
    });
  });
  function show() {
    var frame = Math.min(Math.floor(film.currentTime * fps), total);
    if (head) { head.style.left = (100 * frame / total) + "%"; }
    var current = null;
    blocks.forEach(function (block) {
      if (frame >= Number(block.dataset.startFrame)) { current = block; }
    });
    blocks.forEach(function (block) {
      block.setAttribute("aria-current", block === current ? "true" : "false");
    });
  }
  function follow() {
    show();
    if (!film.paused && !film.ended) { window.requestAnimationFrame(follow); }
  }
  film.addEventListener("play", follow);
  film.addEventListener("timeupdate", show);
  film.addEventListener("seeked", show);
  show();
})();
"""
