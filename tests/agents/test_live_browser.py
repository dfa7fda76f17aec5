"""``xrfed live`` in a real browser (issue 17): Debian's chromium, headless, driven through selenium and Debian's
chromedriver, against the real command serving the embedded scene on 127.0.0.1.

What the browser shows is what is checked: one tile per device with its caption (device, profile, step as separate
words), RGB with the gaze marker where the gaze lands, depth, the audio level, the predictions and the latency; the
lighting buttons change the brightness of the frames that follow (mean luminance of the displayed RGB image, read
from its pixels through a canvas); muting a modality makes it absent from the next frames as the page shows them.

Skipped, with the reason, only when chromium, chromedriver or selenium is missing (scripts/setup.sh installs all
three). The scene is tiny (two devices, 32x32 renders) and the model an untrained tiny M3T: the page, not the
model, is under test.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

_CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_CHROMEDRIVER = shutil.which("chromedriver")
try:
    import selenium  # noqa: F401
    _SELENIUM = True
except ImportError:
    _SELENIUM = False

pytestmark = [
    pytest.mark.skipif(_CHROMIUM is None, reason="chromium is not installed (scripts/setup.sh: apt-get install "
                                                 "chromium chromium-driver)"),
    pytest.mark.skipif(_CHROMEDRIVER is None, reason="chromedriver is not installed (scripts/setup.sh: apt-get "
                                                     "install chromium-driver)"),
    pytest.mark.skipif(not _SELENIUM, reason="selenium is not installed (scripts/setup.sh installs it)"),
]

U1, U2 = "u1-apple_vision_pro", "u2-ray_ban_meta"  # the devices of tests/conftest.py's TINY scene
SIZE_PX = 32
#: a frame after "dim" (or "off") must be at most this fraction as bright as every frame before it, and a frame
#: after "normal" (or "on") at least 1 / this brighter than every frame before it. Measured on this scene: dim
#: 19-28 against 40-52 (mean luminance, 0-255), off 18-19, so the ratio is <= 0.69; frame-to-frame noise of the
#: mean of 32x32 pixels is under 1 level.
_RATIO = 0.8
_WAIT_S = 25.0

# Mean luminance (Rec. 709) of an <img> as displayed, from its pixels (a same-origin image: the canvas is not
# tainted), with the step the page requested it at (the image is of that frame or a later one).
_LUMINANCE_JS = """
const img = arguments[0];
// complete: no request pending (while one is, Chromium draws nothing: a transparent, "black" canvas)
if (!img.complete || !img.naturalWidth || img.dataset.step === undefined) return null;
const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
const p = ctx.getImageData(0, 0, c.width, c.height).data;
let s = 0, s2 = 0;
for (let i = 3; i < p.length; i += 4) if (p[i] !== 255) return null;  // not a whole opaque frame
for (let i = 0; i < p.length; i += 4) { const y = 0.2126 * p[i] + 0.7152 * p[i + 1] + 0.0722 * p[i + 2]; s += y; s2 += y * y; }
const n = p.length / 4, mean = s / n;
return {step: Number(img.dataset.step), mean: mean, std: Math.sqrt(Math.max(0, s2 / n - mean * mean)),
        w: c.width, h: c.height};
"""

# Everything a tile shows, read in one go (the page redraws a few times a second: separate reads could mix frames).
# "shown" = laid out on the page (not display:none); texts as rendered (innerText).
_TILE_JS = """
const dev = arguments[0], t = document.querySelector('.dev[data-device="' + dev + '"]');
if (!t || !window.xrfedState) return null;
const q = s => t.querySelector(s), shown = e => e.getClientRects().length > 0;
const img = q('.view.rgb img').getBoundingClientRect(), g = q('.gaze').getBoundingClientRect();
return {
  state: window.xrfedState.devices[dev], caption: q('.cap').innerText,
  rgb_shown: shown(q('.view.rgb img')), rgb_width: img.width,
  gaze_shown: shown(q('.gaze')), gaze_xy: [(g.left + g.right) / 2 - img.left, (g.top + g.bottom) / 2 - img.top],
  img_wh: [img.width, img.height], label_shown: shown(q('.glabel')), label: q('.glabel').innerText,
  depth_shown: shown(q('.view.depth img')), depth_absent: shown(q('.view.depth .absent')) ?
      q('.view.depth .absent').innerText : null,
  db: q('.db').innerText, level_px: q('.level').getBoundingClientRect().height,
  rows: [...t.querySelectorAll('table.pred tbody tr')].map(r => [...r.cells].map(c => c.innerText)),
  latency: q('.lat').innerText, present: q('.present').innerText,
};
"""


# -- the server and the browser ---------------------------------------------------------------------------------------
def _start_live(tmp: Path) -> subprocess.Popen[str]:
    """``xrfed live`` on a random port: the TINY scene at 32x32, an untrained tiny checkpoint, 20 steps/s at most.
    Its own session (process group), so that stopping it stops whatever it started."""
    import torch

    from agents.checkpoint import save_checkpoint
    from agents.config import make_config
    from agents.model import M3TModel
    from tests.conftest import TINY

    torch.manual_seed(0)
    save_checkpoint(M3TModel(make_config("tiny")), tmp / "ckpt")
    (tmp / "scene.yaml").write_text(yaml.safe_dump(TINY))
    script = Path(sys.executable).with_name("xrfed")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "bridge.cli"]
    # --steps bounds the server's life even if this test process dies without stopping it (20 steps/s at most)
    cmd += ["live", str(tmp / "scene.yaml"), "--checkpoint", str(tmp / "ckpt"), "--port", "0", "--size",
            str(SIZE_PX), "--hz", "20", "--steps", "12000", "--seed", "0"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass
    if proc.stdout is not None:
        proc.stdout.close()


def _read_url(proc: subprocess.Popen[str], timeout_s: float) -> tuple[str | None, list[str]]:
    """The URL ``xrfed live`` prints once it serves, and what it printed so far. A thread reads its output to the
    end (no blocking read here, and a full pipe never stalls the server)."""
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                if len(lines) < 1000:
                    lines.append(line.rstrip())
                if not found.is_set() and re.search(r"open http://127\.0\.0\.1:\d+/", line):
                    found.set()
        except (OSError, ValueError):  # closed by _stop
            pass
        found.set()  # the server ended

    threading.Thread(target=read, daemon=True).start()
    found.wait(timeout_s)
    for line in list(lines):
        m = re.search(r"open (http://127\.0\.0\.1:\d+/)", line)
        if m:
            return m.group(1), lines
    return None, lines


def _browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(_CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-extensions", "--window-size=1000,720"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # both paths given: selenium's driver manager (which would go online) is not used
    return webdriver.Chrome(service=Service(str(_CHROMEDRIVER)), options=opts)


@dataclass
class Page:
    driver: Any
    url: str
    shots: Path

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def until(self, what: str, check: Callable[[], Any], timeout_s: float = _WAIT_S) -> Any:
        """Poll ``check`` until it returns something truthy; on time-out fail naming ``what`` (and save a screenshot)."""
        end = time.monotonic() + timeout_s
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > end:
                self.shot("timeout")
                pytest.fail(f"the page did not show {what} within {timeout_s:g} s (screenshot: {self.shots})")
            time.sleep(0.05)

    def shot(self, name: str) -> Path:
        path = self.shots / f"live-{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def tile(self, dev: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, f'.dev[data-device="{dev}"]')

    def state(self, dev: str) -> dict[str, Any] | None:
        """The state the page last rendered for ``dev`` (the page keeps it as ``window.xrfedState``)."""
        return self.js("const s = window.xrfedState; return s ? s.devices[arguments[0]] || null : null;", dev)

    def view(self, dev: str) -> dict[str, Any] | None:
        """What ``dev``'s tile shows (see ``_TILE_JS``), None before it is drawn."""
        return self.js(_TILE_JS, dev)

    def rgb(self, dev: str) -> dict[str, Any] | None:
        """Mean luminance of the RGB image the page shows for ``dev`` (None before it has one)."""
        imgs = self.driver.find_elements("css selector", f'.dev[data-device="{dev}"] .view.rgb img')
        return self.js(_LUMINANCE_JS, imgs[0]) if imgs else None

    def frames(self, dev: str, n: int, *, after_step: int) -> list[dict[str, Any]]:
        """The displayed RGB image of ``n`` distinct frames requested after ``after_step`` (as the page shows them)."""
        seen: dict[int, dict[str, Any]] = {}

        def more() -> bool:
            m = self.rgb(dev)
            if m is not None and m["step"] > after_step:
                seen.setdefault(m["step"], m)
            return len(seen) >= n

        self.until(f"{n} new RGB frames of {dev} after step {after_step}", more)
        return [seen[k] for k in sorted(seen)][:n]

    def click(self, button_id: str) -> None:
        self.driver.find_element("id", button_id).click()


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    tmp = tmp_path_factory.mktemp("live_browser")
    proc = _start_live(tmp)
    driver = None
    try:
        driver = _browser()  # chromium starts while the server loads
        url, out = _read_url(proc, 90.0)
        assert url is not None, f"xrfed live did not print its URL (exit {proc.poll()}): {out[-20:]}"
        driver.get(url)
        yield Page(driver, url, tmp)
    finally:
        try:
            if driver is not None:
                driver.quit()
        finally:
            _stop(proc)


# -- the tests ----------------------------------------------------------------------------------------------------------
def test_page_shows_one_tile_per_device_with_every_view(page):
    from selenium.webdriver.common.by import By

    assert page.driver.title == "xrfed live"
    page.until("both tiles with images", lambda: all(page.rgb(d) for d in (U1, U2)))
    # a frame where u1's gaze is valid (a blink or a saccade leaves it out), drawn with depth
    page.until("u1 with gaze and depth", lambda: (v := page.view(U1)) and v["gaze_shown"] and v["depth_shown"])
    tiles = page.driver.find_elements(By.CSS_SELECTOR, ".dev")
    assert sorted(t.get_attribute("data-device") for t in tiles) == [U1, U2]

    for dev, profile in ((U1, "apple_vision_pro"), (U2, "ray_ban_meta")):
        v = page.view(dev)
        assert v is not None
        st = v["state"]
        # the caption: device, profile and step as separate words (it used to read "...apple_vision_prostep 167")
        assert re.fullmatch(rf"{re.escape(dev)} {profile} step {st['step']} 402 lux", v["caption"]), v["caption"]
        # RGB: the frame's own pixels (32x32), shown enlarged; not a blank image
        m = page.rgb(dev)
        assert m is not None and (m["w"], m["h"]) == (SIZE_PX, SIZE_PX) and m["std"] > 2, m
        assert v["rgb_shown"] and v["rgb_width"] == 192
        # the audio level: a bar of some height and its level in dBFS
        assert v["db"] == f"{st['audio_dbfs']:.0f} dBFS" and v["level_px"] > 0, (v["db"], v["level_px"])
        # predictions: one row per task the device runs (task, predicted label, confidence, true label)
        rows = v["rows"]
        assert sorted(r[0] for r in rows) == sorted(st["prediction"]) and len(rows) >= 2, rows
        assert all(r[1] == st["prediction"][r[0]] and 0.0 <= float(r[2]) <= 1.0 and r[3] == st["labels_true"][r[0]]
                   for r in rows), rows
        assert re.fullmatch(r"latency \d+\.\d ms \(device estimate \d+\.\d ms\)", v["latency"]), v["latency"]
        assert v["present"] == "present: " + ", ".join(st["present"])
        # the predicted label of the first task is drawn over the image
        task = st["shown_task"]
        assert v["label_shown"] and v["label"] == f"{st['prediction'][task]} {st['confidence'][task]:.2f}", v

    # u1 has gaze and depth: the marker sits where the gaze lands, and depth is an image in false colour
    v = page.view(U1)
    assert v is not None and v["gaze_shown"] and v["state"]["gaze_uv"] is not None
    (u, w), (x, y) = ((min(1.0, max(0.0, c)) for c in v["state"]["gaze_uv"]), v["gaze_xy"])
    assert abs(x - u * v["img_wh"][0]) < 3 and abs(y - w * v["img_wh"][1]) < 3, v
    depth = page.until("u1's depth image", lambda: page.js(_LUMINANCE_JS, page.tile(U1).find_element(
        By.CSS_SELECTOR, ".view.depth img")))
    assert depth is not None and (depth["w"], depth["h"]) == (SIZE_PX, SIZE_PX) and depth["std"] > 1, depth
    # u2 (Ray-Ban Meta) has no gaze tracker and no depth camera: no marker, and it says so (not "muted")
    v2 = page.view(U2)
    assert v2 is not None and not v2["gaze_shown"] and not v2["depth_shown"]
    assert v2["depth_absent"] == "no depth sensor"
    page.shot("tiles")


def _wait_lux(page: Page, lux: float) -> int:
    """Wait until the page shows a frame of u1 lit at ``lux`` (the frame's own illuminance); its step."""
    st = page.until(f"u1 at {lux:g} lux", lambda: (s := page.state(U1)) and s["lux"] == lux and s)
    return int(st["step"])


def test_lighting_buttons_change_the_brightness_of_the_frames_that_follow(page):
    """Mean luminance of the displayed RGB images of both devices: the first frame after "dim" / "off" is darker than
    every frame before by a factor <= 0.8 (measured: <= 0.69), the first after "normal" / "on" brighter by 1 / 0.8.
    The frames that follow a press are found by their own illuminance (the state the page shows: 402 lux nominal,
    42 dimmed, 2 with the lights off) and the images the page requested from that step on."""
    nominal = _wait_lux(page, 402.0)  # TINY's light at intensity 1.0
    prev = {dev: page.frames(dev, 2, after_step=nominal - 1) for dev in (U1, U2)}
    for button, lux, darker in [("b_dim", 42.0, True), ("b_normal", 402.0, False), ("b_off", 2.0, True),
                                ("b_on", 402.0, False)]:
        page.click(button)
        step = _wait_lux(page, lux)
        for dev in (U1, U2):
            after = page.frames(dev, 1, after_step=step - 1)  # the first frame lit so
            lum = (button, dev, [round(f["mean"], 1) for f in prev[dev]], [round(f["mean"], 1) for f in after])
            if darker:
                assert max(f["mean"] for f in after) <= _RATIO * min(f["mean"] for f in prev[dev]), lum
            else:
                assert min(f["mean"] for f in after) * _RATIO >= max(f["mean"] for f in prev[dev]), lum
            prev[dev] = after
    assert page.driver.find_element("id", "err").text == ""


def test_muting_a_modality_makes_it_absent_in_the_next_frames(page):
    from selenium.webdriver.support.ui import Select

    muted = ("depth", "audio", "gaze")
    dev_sel, mod_sel = Select(page.driver.find_element("id", "dev")), Select(page.driver.find_element("id", "mod"))
    dev_sel.select_by_visible_text(U1)
    for mod in muted:
        mod_sel.select_by_visible_text(mod)
        page.click("b_mute")
    v = page.until("u1's depth, audio and gaze absent",
                   lambda: (v := page.view(U1)) and not set(muted) & set(v["state"]["present"]) and v)
    steps = set()
    for _ in range(3):  # the next frames, as the page shows them
        steps.add(v["state"]["step"])
        assert not set(muted) & set(v["state"]["present"]), v["state"]["present"]
        assert not v["depth_shown"] and v["depth_absent"] == "depth muted", v
        assert v["db"] == "audio muted" and v["level_px"] == 0, v
        assert not v["gaze_shown"], v
        assert v["rgb_shown"]  # RGB is still shown
        assert v["present"].startswith("present: rgb, ") and v["present"].endswith("muted: audio, depth, gaze"), v
        v = page.until("a newer frame", _newer(page, U1, max(steps)))
    # the other device is untouched
    v2 = page.view(U2)
    assert v2 is not None and v2["db"].endswith(" dBFS") and "audio" in v2["state"]["present"]
    page.shot("muted")
    for mod in muted:
        mod_sel.select_by_visible_text(mod)
        page.click("b_unmute")
    page.until("u1's depth and audio back", lambda: (v := page.view(U1)) and v["depth_shown"]
               and v["db"].endswith(" dBFS") and {"depth", "audio"} <= set(v["state"]["present"]))
    assert page.driver.find_element("id", "err").text == ""


def test_view_images_and_the_snapshot_tile(page):
    """The page's image requests as any client can make them: a view the frame lacks is a 404 naming it, an unknown
    view a 400; the whole tile (a snapshot PNG) keeps its caption words apart."""
    import io
    import urllib.error
    import urllib.request

    from PIL import Image, ImageDraw

    def get(target: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(page.url + target, timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    status, body = get(f"tile/{U2}.png?view=depth")
    assert status == 404 and re.match(rf"device {U2}: no depth in frame \d+ \(muted, or not on the device\)$",
                                      body.decode().strip()), body
    status, body = get(f"tile/{U1}.png?view=ir")
    assert (status, body.decode().strip()) == (400, "parameter view: expected rgb or depth (one modality's image at "
                                                    "the frame's resolution; without it, the whole tile), got 'ir'")
    status, body = get(f"tile/{U1}.png?view=rgb")
    assert status == 200 and Image.open(io.BytesIO(body)).size == (SIZE_PX, SIZE_PX)
    # the snapshot tile: RGB and depth 3x enlarged side by side, then the caption "<device>  step N  latency ..."
    status, body = get(f"tile/{U1}.png")
    tile = np.asarray(Image.open(io.BytesIO(body)).convert("L"))
    h = 3 * SIZE_PX
    assert status == 200 and tile.shape[1] == 2 * h + 24
    caption = tile[h + 4:h + 18]  # the first caption line
    id_px = int(ImageDraw.Draw(Image.new("L", (1, 1))).textlength(U1))
    # after the device id a gap of >= 8 blank columns, then "step" (the font's space is 2 px: it used to read as
    # "u1-apple_vision_prostep 9")
    inked = np.asarray((caption > 120).any(axis=0))
    assert inked[4:4 + id_px].any() and not inked[4 + id_px + 1:4 + id_px + 9].any(), np.flatnonzero(inked)
    assert inked[4 + id_px + 9:4 + id_px + 40].any()


def _newer(page: Page, dev: str, step: int) -> Callable[[], dict[str, Any] | None]:
    """A check for :meth:`Page.until`: what ``dev``'s tile shows once it shows a frame after ``step``."""
    def check() -> dict[str, Any] | None:
        v = page.view(dev)
        return v if v is not None and v["state"]["step"] > step else None

    return check


def test_no_errors_in_the_browser_console(page):
    """Nothing the page did logged an error. One request may race a mute: the page asked for a modality's image
    that the next frame no longer carried (an honest 404 for ``view=...``, and the image stays hidden)."""
    logs = page.driver.get_log("browser")
    errors = [e["message"] for e in logs if e["level"] == "SEVERE"
              and not re.search(r"/tile/[^ ]+\.png\?view=\w+&t=\d+ - Failed to load resource: .* 404", e["message"])]
    assert errors == [], errors

