"""report.html in a real browser: the example story rendered on the preview backend, its report
opened from disk (file://) in Debian's headless chromium, driven by Selenium through Debian's
chromium-driver (no browser download: .ci/run installs both from apt).

Without chromium this module skips on a developer's machine, and fails in CI (CI=true), where a
missing browser means the set-up is broken. A screenshot goes to out/report-screenshot.png.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from videokit.story import load_story, plan_story

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "story.yaml"
SCREENSHOT = ROOT / "out" / "report-screenshot.png"


def _browser() -> tuple[str, str]:
    """Chromium and its driver, or skip (fail in CI) saying what to install."""
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        chromium = None  # the dev extra is not installed: the same remedy, `make install`
    if chromium is None or driver is None:
        reason = (
            "the browser test needs chromium, chromium-driver and selenium: "
            "`apt-get install chromium chromium-driver` and `make install` (.ci/run does both)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"in CI, {reason}")
        pytest.skip(reason)
    return chromium, driver


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _browser()  # skip before paying for the render
    out = tmp_path_factory.mktemp("report") / "story"
    store = tmp_path_factory.mktemp("store")
    rendered = subprocess.run(
        [sys.executable, "-m", "videokit", "render", str(EXAMPLE), "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "VIDEOKIT_CACHE_DIR": str(store)},
    )
    assert rendered.returncode == 0, rendered.stderr
    done = json.loads(rendered.stdout.splitlines()[-1])
    assert done["report"] == str(out / "report.html")
    return out


@pytest.fixture(scope="module")
def browser(workdir: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = _browser()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--mute-audio",
        "--window-size=1280,900",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_script_timeout(60)
    try:
        driver.get((workdir / "report.html").as_uri())
        yield driver
    finally:
        driver.quit()


def severe(driver: Any) -> list[dict[str, Any]]:
    """Console errors (and failed loads, CSP refusals) since the last call."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def wait_for(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def expected_blocks() -> list[dict[str, Any]]:
    """Where each clip lands in the film, from the story's plan: the stitcher's arithmetic."""
    plan = plan_story(load_story(EXAMPLE))
    blocks, start = [], 0
    for entry in plan.timeline:
        start -= entry.crossfade
        length = entry.frames - entry.drop_head
        blocks.append(
            {
                "scene": entry.scene,
                "start": start,
                "frames": length,
                "dropHead": entry.drop_head,
                "crossfade": entry.crossfade,
            }
        )
        start += length
    assert start == plan.final_frames
    return blocks


def test_the_page_loads_without_console_errors(browser: Any) -> None:
    assert browser.title.startswith("Robbie Dresses Up")
    wait_for(lambda: browser.execute_script("return document.readyState") == "complete")
    assert severe(browser) == []


PLAY_ALL = """
const done = arguments[arguments.length - 1];
const videos = Array.from(document.querySelectorAll("video"));
function played(video) {
  return new Promise((resolve) => {
    video.muted = true;
    const from = video.currentTime;
    const started = performance.now();
    const report = (error) => resolve({
      src: video.getAttribute("src"), ready: video.readyState, time: video.currentTime,
      from: from, error: error || (video.error && video.error.code) || null,
    });
    video.play().then(() => {
      (function check() {
        if (video.readyState >= 2 && video.currentTime > from) { video.pause(); report(); }
        else if (performance.now() - started > 15000) { video.pause(); report("stalled"); }
        else { setTimeout(check, 25); }
      })();
    }, (error) => report(String(error)));
  });
}
Promise.all(videos.map(played)).then(done);
"""


def test_every_video_loads_and_plays(browser: Any) -> None:
    results = browser.execute_async_script(PLAY_ALL)
    assert len(results) == 1 + 5  # the film, and one clip per scene
    for result in results:
        assert result["error"] is None, result
        assert result["ready"] >= 2 and result["time"] > result["from"], result
    assert severe(browser) == []


READ_TIMELINE = """
const strip = document.getElementById("timeline");
const box = strip.getBoundingClientRect();
const inner = {left: box.left + strip.clientLeft, width: strip.clientWidth};
const read = (el) => {
  const r = el.getBoundingClientRect();
  return Object.assign({}, el.dataset, {left: r.left - inner.left, width: r.width});
};
return {
  frames: Number(strip.dataset.frames), width: inner.width,
  blocks: Array.from(strip.querySelectorAll("button.clip")).map(read),
  seams: Array.from(strip.querySelectorAll(".seam")).map(read),
  fades: Array.from(strip.querySelectorAll(".xfade")).map(read),
};
"""


def test_the_timeline_has_one_block_per_clip_and_marks_at_the_right_frames(
    browser: Any, workdir: Path
) -> None:
    shown = browser.execute_script(READ_TIMELINE)
    manifest = json.loads((workdir / "manifest.json").read_text())
    assert shown["frames"] == manifest["final"]["frames"] == 179
    expected = expected_blocks()
    assert [b["scene"] for b in shown["blocks"]] == manifest["timeline"]
    px = shown["width"] / shown["frames"]  # pixels per film frame
    for block, want in zip(shown["blocks"], expected, strict=True):
        assert int(block["startFrame"]) == want["start"], block
        assert int(block["frames"]) == want["frames"], block
        assert int(block["dropHead"]) == want["dropHead"]
        assert int(block["crossfade"]) == want["crossfade"]
        # Drawn to scale (a block's CSS min-width only matters for clips under a pixel).
        assert abs(block["left"] - want["start"] * px) <= 1.5, block
        assert abs(block["width"] - want["frames"] * px) <= 1.5, block
    seams = [(s["scene"], int(s["frame"])) for s in shown["seams"]]
    assert seams == [(b["scene"], b["start"]) for b in expected if b["dropHead"]]
    assert seams == [("roulette", 98)]  # 49 + 49: roulette's first frame repeats tuxedo's last
    for seam in shown["seams"]:
        assert abs(seam["left"] + seam["width"] / 2 - int(seam["frame"]) * px) <= 2.5, seam
    fades = [(f["scene"], int(f["startFrame"]), int(f["frames"])) for f in shown["fades"]]
    assert fades == [(b["scene"], b["start"], b["crossfade"]) for b in expected if b["crossfade"]]
    assert fades == [("beach", 138, 8)]  # 0.5 s at 16 fps, over roulette's last 8 frames
    for fade in shown["fades"]:
        assert abs(fade["left"] - int(fade["startFrame"]) * px) <= 1.5, fade
        assert abs(fade["width"] - int(fade["frames"]) * px) <= 1.5, fade


def film_frame(browser: Any) -> float:
    value = browser.execute_script(
        "const f = document.getElementById('film'); return f.seeking ? null : "
        "f.currentTime * Number(f.dataset.fps);"
    )
    return float("nan") if value is None else float(value)


def test_choosing_a_block_seeks_the_film_to_the_clips_first_frame(browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.execute_script("document.getElementById('film').pause()")
    blocks = browser.find_elements(By.CSS_SELECTOR, "#timeline button.clip")
    assert len(blocks) == 4
    # Clicked, then from the keyboard: Enter and Space on a focused block.
    presses: list[Callable[[Any], None]] = [
        lambda b: b.click(),
        lambda b: b.send_keys(Keys.ENTER),
        lambda b: b.send_keys(Keys.SPACE),
    ]
    for press in presses:
        for block in reversed(blocks):  # from the end, so every seek moves the film
            start = int(block.get_attribute("data-start-frame"))
            press(block)
            frame = wait_for(lambda s=start: abs(film_frame(browser) - s) <= 1, timeout=5)
            assert frame, (block.get_attribute("data-scene"), start, film_frame(browser))
            if press is not presses[0]:
                assert browser.switch_to.active_element == block
    current = browser.find_element(By.CSS_SELECTOR, "#timeline button.clip[aria-current=true]")
    assert current.get_attribute("data-scene") == "hello"  # the last one chosen: frame 0
    assert severe(browser) == []


def resize(browser: Any, width: int, height: int) -> None:
    """Resize the window and wait until the page has the new width (resizing is asynchronous)."""
    browser.set_window_size(width, height)
    wide = "return window.innerWidth"
    assert wait_for(lambda: browser.execute_script(wide) == width), browser.execute_script(wide)


def test_the_page_fits_a_phone_and_a_screenshot_is_kept(browser: Any) -> None:
    try:
        resize(browser, 390, 844)
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{overflow} px wider than a phone's screen"
    finally:
        resize(browser, 1280, 900)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, min(int(height) + 120, 8000))
    browser.execute_script("window.scrollTo(0, 0)")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000
    assert severe(browser) == []
