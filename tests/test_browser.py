"""The demo page end to end: `deblur serve` in a subprocess, Debian's Chromium via Playwright.

Playwright cannot download its own browser here, so it drives /usr/bin/chromium. Without
it the test skips on a workstation but fails in CI (CI=true), where it must run.
"""

from __future__ import annotations

import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from servers import free_port, running
from tiny_models import save_tiny

from deblur.infer import tile_count

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[1]
TILE, OVERLAP = 128, 32  # serve.tile in the demo's params; evaluate.overlap's default


@pytest.fixture
def chromium():
    """Playwright's sync API, or a skip (a failure in CI) naming what is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "the playwright package (pip install playwright)"
    else:
        if CHROMIUM.is_file():
            return sync_playwright
        missing = f"{CHROMIUM} (make setup installs Debian's chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser test needs {missing}; CI must run it")
    pytest.skip(f"needs {missing}")


def blurry_photo() -> np.ndarray:
    """scikit-image's cat, smeared by a 9-pixel horizontal shake (300x435)."""
    from skimage import data

    cat = data.chelsea().astype(np.float32)
    smear = np.mean([np.roll(cat, s, axis=1) for s in range(-4, 5)], axis=0)
    return np.round(smear[:, 8:-8]).astype(np.uint8)


@pytest.fixture
def demo(tmp_path):
    """`deblur serve` on a free port, in a project with tiny models and no MLflow store."""
    with serving(tmp_path) as url:
        yield url


@contextmanager
def serving(tmp_path, *extra: str, env_extra: dict | None = None):
    (tmp_path / "models").mkdir()
    for kind in ("gan", "ae"):
        trained = REPO / "models" / f"{kind}.pt"
        if os.environ.get("DEBLUR_SCREENSHOT") and trained.is_file():
            shutil.copyfile(trained, tmp_path / "models" / f"{kind}.pt")  # a real picture
        else:
            save_tiny(tmp_path / "models" / f"{kind}.pt", kind, nudge=0.01)
    # Small tiles, so a modest photo takes many of them and its progress can be watched.
    (tmp_path / "params.yaml").write_text(f"serve:\n  tile: {TILE}\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(env_extra or {})
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "deblur", "serve", "--port", str(port), "--device", "cpu"]
    cmd += extra
    with running(cmd, url, "/health", tmp_path / "serve.log", timeout=60, cwd=tmp_path, env=env):
        yield url


def test_upload_compare_and_download(chromium, demo, tmp_path):
    photo = tmp_path / "cat.jpg"
    Image.fromarray(blurry_photo()).save(photo, quality=92)
    (notes := tmp_path / "notes.txt").write_text("not a photo")

    with chromium() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(demo)
            page.wait_for_selector("input[name=model][value=gan]:checked")
            assert "models/ae.pt" in page.inner_text("#models")

            # A wrong file type: the server's 415 message shows on the page.
            page.set_input_files("#file", str(notes))
            page.click("#run")
            page.wait_for_selector("#error:not([hidden])")
            assert "notes.txt is not an image" in page.inner_text("#error")

            page.set_input_files("#file", str(photo))
            page.click("#run")
            page.wait_for_selector("#download:not([hidden])", timeout=60_000)
            assert page.is_hidden("#error")
            size = page.eval_on_selector("#after", "img => [img.naturalWidth, img.naturalHeight]")
            assert size == [435, 300]
            assert "models/gan.pt" in page.inner_text("#meta")
            link = page.eval_on_selector("#download", "a => [a.download, a.href]")
            assert link[0] == "cat-deblurred.png" and link[1].startswith("blob:")

            # Dragging the divider moves the clip of the "before" image.
            box = page.locator("#compare").bounding_box()
            page.mouse.click(box["x"] + box["width"] * 0.3, box["y"] + box["height"] / 2)
            position = page.eval_on_selector("#slider", "s => Number(s.value)")
            assert 25 < position < 35

            with page.expect_download() as download:
                page.click("#download")
            saved = tmp_path / "downloaded.png"
            download.value.save_as(saved)
            assert Image.open(saved).size == (435, 300)

            # Another model re-runs the same photo.
            page.check("input[name=model][value=ae]")
            page.wait_for_function("document.querySelector('#meta').innerText.includes('ae.pt')")
            assert "Autoencoder" in page.inner_text("#tag-after")

            shot = tmp_path / "web_demo.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    if os.environ.get("DEBLUR_SCREENSHOT"):
        target = REPO / "reports" / "figures" / "web_demo.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)


# Every text and value the progress card shows, as the page changes it.
RECORD_PROGRESS = """() => {
  window.seen = [];
  const note = () => window.seen.push([
    document.querySelector("#progress-text").textContent,
    document.querySelector("#progress").value,
    document.querySelector("#progress").max,
  ]);
  new MutationObserver(note).observe(document.querySelector("#busy"),
    { subtree: true, childList: true, characterData: true, attributes: true });
}"""


def test_a_large_photo_shows_its_progress(chromium, demo, tmp_path):
    # Enough tiles that the tiny model's job outlasts several of the page's polls.
    width, height = 2880, 2160
    photo = tmp_path / "big.jpg"
    Image.fromarray(blurry_photo()).resize((width, height)).save(photo, quality=90)
    total = tile_count(height, width, TILE, OVERLAP)
    assert total > 500

    with chromium() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(demo)
            page.wait_for_selector("input[name=model][value=gan]:checked")
            page.set_input_files("#file", str(photo))
            page.evaluate(RECORD_PROGRESS)
            page.click("#run")
            # Mid-way: the bar has moved but not finished.
            page.wait_for_function(
                "(() => { const p = document.querySelector('#progress');"
                " return p.hasAttribute('value') && p.value > 0 && p.value < p.max; })()",
                timeout=120_000,
            )
            shot = tmp_path / "progress.png"
            page.screenshot(path=str(shot))
            text = page.inner_text("#progress-text")
            assert text.startswith("Deblurring · tile ") and text.endswith(f" of {total}")
            assert page.inner_text("#progress-eta").startswith("about ")
            page.wait_for_selector("#download:not([hidden])", timeout=180_000)
            assert page.is_hidden("#busy") and page.is_hidden("#error")
            seen = page.evaluate("window.seen")
            size = page.eval_on_selector("#after", "img => [img.naturalWidth, img.naturalHeight]")
            assert size == [width, height]
        finally:
            browser.close()
    shown = sorted({int(v) for text, v, top in seen if "tile" in text and top == total})
    # The bar moved through several values on its way, and never past the total.
    assert len([v for v in shown if 0 < v < total]) >= 2, seen
    assert shown[-1] <= total
    if os.environ.get("DEBLUR_SCREENSHOT"):
        target = REPO / "reports" / "figures" / "web_demo_progress.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)


def test_a_server_with_a_token_works_from_the_address_it_prints(chromium, tmp_path):
    """The page takes the token from #token=..., keeps it off the address bar, and sends
    it with every call; without it the same page says what is missing."""
    import requests

    photo = tmp_path / "cat.png"
    Image.fromarray(blurry_photo()).save(photo)
    token = "s3cret-Token"
    with serving(tmp_path, env_extra={"DEBLUR_SERVE_TOKEN": token}) as url:
        assert requests.get(url + "/api/models", timeout=10).status_code == 401
        with chromium() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                bare = browser.new_page()
                bare.goto(url)
                bare.wait_for_selector("#error:not([hidden])")
                assert "needs its token" in bare.inner_text("#error")

                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(f"{url}/#token={token}")
                page.wait_for_selector("input[name=model][value=gan]:checked")
                assert token not in page.url
                page.set_input_files("#file", str(photo))
                page.click("#run")
                page.wait_for_selector("#download:not([hidden])", timeout=60_000)
                assert page.is_hidden("#error")
            finally:
                browser.close()
