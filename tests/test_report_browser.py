"""report.html renders in a real browser (headless Chromium): every picture loads, and a
screenshot is kept for a person to look at."""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import pytest

from pipeline.run import run_pair

REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "out" / "test-artifacts" / "report_screenshot.png"
WIDTH_PX = 1280

# appended to a copy of the report: once the page has loaded, write what every <img> decoded to
# into the DOM, where --dump-dom shows it
CHECK_SCRIPT = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.map.call(document.images, function (im) {
    return {alt: im.alt, complete: im.complete, naturalWidth: im.naturalWidth,
            naturalHeight: im.naturalHeight};
  });
  var height = document.documentElement.scrollHeight;
  var width = document.documentElement.scrollWidth;
  var pre = document.createElement("pre");
  pre.id = "img-check";
  pre.textContent = JSON.stringify({images: imgs,
                                    height: height, width: width});
  document.body.appendChild(pre);
});
</script>"""


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def _run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    profile.mkdir(parents=True, exist_ok=False)   # a new, empty profile per run
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def report_html(sample_pair, tmp_path_factory) -> Path:
    before, after, _ = sample_pair
    out = tmp_path_factory.mktemp("browser") / "hmeimim"
    run_pair(before, after, out)
    return out / "report.html"


def test_report_renders_in_chromium_with_every_image_loaded(report_html, tmp_path,
                                                            record_property, capsys):
    binary = _chromium()
    if binary is None:
        pytest.skip("headless Chromium is not installed (Debian package 'chromium'; .ci/run "
                    "installs it)")
    page = report_html.read_text(encoding="utf-8")
    n_img = len(re.findall(r"<img ", page))
    check = tmp_path / "report_check.html"
    check.write_text(page.replace("</body>", CHECK_SCRIPT + "</body>"), encoding="utf-8")
    done = _run_chromium(binary, tmp_path / "profile-dom", "--virtual-time-budget=10000",
                         f"--window-size={WIDTH_PX},1000",
                         "--dump-dom", check.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="img-check">(.*?)</pre>', done.stdout, re.S)
    assert found, "the page's check script did not run:\n" + done.stdout[-2000:]
    result = json.loads(html.unescape(found.group(1)))
    images = result["images"]
    assert len(images) == n_img >= 3
    broken = [im["alt"] for im in images if not (im["complete"] and im["naturalWidth"] > 0)]
    assert not broken, f"images that did not load: {broken}"
    assert result["width"] <= WIDTH_PX, "the page needs a horizontal scroll bar at 1280 px"

    shot = tmp_path / "report_screenshot.png"
    height = max(800, min(int(result["height"]), 16000))
    done = _run_chromium(binary, tmp_path / "profile-shot", f"--window-size={WIDTH_PX},{height}",
                         f"--screenshot={shot}", report_html.as_uri())
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[1] == WIDTH_PX and img.shape[0] >= 800
    assert img.std() > 20, "the screenshot is blank"
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, SCREENSHOT)
    record_property("report_screenshot", str(SCREENSHOT))
    with capsys.disabled():
        print(f"\nreport.html screenshot: {SCREENSHOT} (also {shot})")
