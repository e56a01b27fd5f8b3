"""The results page as a person sees it: opened in headless Chromium, every figure loads and nothing is cut off.

Two pages: the published one (docs/results/index.html, built from results/ by
`rbench report results/ --html docs/results/index.html --png docs/results/`) and one built here from real
CPU runs plus two GPU-like copies, so the per-GPU headline is drawn too. Chromium loads each page with a
probe script added that reports, after load, every image's decoded size and every element that runs past
the window's right edge; a screenshot shows the page is not blank. The figures themselves are checked for
clipping where the browser cannot see it: no drawn pixel touches a PNG's edge (a legend cut off at the
figure's border does).
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from rbench import cli, results

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "results" / "index.html"
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium here (.ci/run installs Debian's "
                                                            "`chromium` with apt-get; it could not be installed)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--virtual-time-budget=10000"]
PROBE = """<script>
addEventListener('load', () => {
  const width = document.documentElement.clientWidth;
  const images = [...document.images].map(i => ({alt: i.alt, loaded: i.complete && i.naturalWidth > 0,
    natural: i.naturalWidth, shown: Math.round(i.getBoundingClientRect().width)}));
  const past = [...document.body.querySelectorAll('*')].filter(e => e.getBoundingClientRect().right > width + 1)
    .map(e => e.tagName + ': ' + (e.alt || e.textContent || '').slice(0, 60));
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({width, scroll: document.documentElement.scrollWidth, images, past});
  document.body.appendChild(out);
});
</script>"""


def chromium(*args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=120)


def probe(page: Path, tmp: Path, width: int) -> dict:
    """Load `page` (with the probe added) at `width` px and return what the probe saw."""
    probed = tmp / f"probed-{width}.html"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    proc = chromium(f"--window-size={width},1000", "--dump-dom", probed.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"the probe did not run: {proc.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def edge_pixels(png: bytes) -> int:
    """How many pixels of the outermost two rows and columns are not background (white)."""
    import matplotlib.image
    import numpy as np

    a = matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3]
    edge = np.concatenate([a[:2].reshape(-1, 3), a[-2:].reshape(-1, 3), a[:, :2].reshape(-1, 3), a[:, -2:].reshape(-1, 3)])
    return int((edge < 0.95).any(axis=1).sum())


def check_page(page: Path, tmp: Path) -> dict:
    text = page.read_text(encoding="utf-8")
    pngs = [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', text)]
    assert pngs, f"{page}: no figure"
    assert all(edge_pixels(p) == 0 for p in pngs), "a figure is drawn up to its edge: something is cut off"
    for width in (1280, 800):
        seen = probe(page, tmp, width)
        assert len(seen["images"]) == len(pngs)
        assert all(i["loaded"] and i["natural"] > 300 for i in seen["images"]), seen["images"]
        assert all(i["shown"] <= seen["width"] for i in seen["images"])
        assert seen["scroll"] <= seen["width"] and not seen["past"], (width, seen["past"][:5])
    shot = tmp / "page.png"
    proc = chromium("--window-size=1280,2400", f"--screenshot={shot}", page.as_uri())
    assert shot.exists(), proc.stderr[-2000:]
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (2400, 1280) and pixels[..., :3].std() > 0.05  # something is drawn
    return {"text": text, "screenshot": shot}


@needs_browser
def test_published_page_shows_every_figure_uncut(tmp_path):
    assert PAGE.exists(), "docs/results/index.html is missing: rbench report results/ --html docs/results/index.html"
    seen = check_page(PAGE, tmp_path)
    runs = list(results.iter_runs(ROOT / "results"))
    assert f"from {len(runs)} run file(s)" in seen["text"], "the page is older than results/: rebuild it"
    if not any((r.env.get("device") or {}).get("kind") not in ("cpu", None) for r in runs):
        assert "No GPU results yet" in seen["text"] and "CPU example" in seen["text"]
    for png in ("throughput", "latency", "memory"):
        assert (PAGE.parent / f"{png}.png").exists()


@needs_browser
def test_a_page_with_gpus_shows_their_headline_uncut(tmp_path):
    from test_report import flagship_run, kernel_json

    runs = tmp_path / "results"
    runs.mkdir()
    flagship_run(runs / "h200.jsonl", "NVIDIA H200", "cuda", 10.0, {("triton", 1): "incorrect"})
    flagship_run(runs / "h100.jsonl", "NVIDIA H100 80GB HBM3", "cuda", 7.0)
    flagship_run(runs / "cpu.jsonl", "AMD EPYC 7763", "cpu", 0.1, precision="fp32")
    kernel_json(runs / "kernels.json", "NVIDIA H200", 0.93, 1.21)
    page = tmp_path / "site" / "index.html"
    assert cli.main(["report", str(runs), "--html", str(page), "--png", str(page.parent)]) == 0
    text = check_page(page, tmp_path)["text"]
    assert "No GPU results yet" not in text
    assert "NVIDIA H200 (cuda): ResNet-50 fp16, 224 px" in text and "NVIDIA H100 80GB HBM3 (cuda)" in text
