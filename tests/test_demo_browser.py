"""Each of the five demos from a tiny run folder, driven in headless Chromium through Playwright: give the input,
press the button, assert the result that appears. Screenshots go to the test's tmp folder (and, with
HF_MEDAI_SCREENSHOTS=DIR set, small copies to DIR/<app>.png: that is how docs/screenshots/ is made).

Skipped only where chromium or playwright is missing (CI installs both: see .ci/run)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("gradio")

from test_demos import tiny_run  # noqa: E402

from helpers import free_port  # noqa: E402
from hf_medai.demos import BANNER, demo_for  # noqa: E402
from hf_medai.demos.common import launch  # noqa: E402

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TIMEOUT_MS = 60_000  # shared CPUs: one call can be slow


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def open_app(browser, tmp_path):
    """open_app(kind, **demo_attrs) -> (page, demo): the app of a fresh tiny run folder, loaded in a page."""
    started = []

    def _open(kind: str, **attrs):
        run = tiny_run(kind, tmp_path / kind)
        demo = demo_for(run)
        for key, value in attrs.items():
            setattr(demo, key, value)
        port = free_port()
        app = demo.build()
        launch(app, run, port=port, block=False)
        started.append(app)
        page = browser.new_page(viewport={"width": 1000, "height": 700})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"http://127.0.0.1:{port}/")
        banner = page.locator("#research-banner")
        sync_api.expect(banner).to_have_text(BANNER)
        return page, demo

    yield _open
    for app in started:
        app.close()


def screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.evaluate("window.scrollTo(0, 0)")  # the banner in view
    page.wait_for_timeout(300)
    page.screenshot(path=str(path))
    assert path.stat().st_size > 0
    docs = os.environ.get("HF_MEDAI_SCREENSHOTS")
    if docs:  # a small copy for the README: palette PNG, ~1000x700
        from PIL import Image

        Path(docs).mkdir(parents=True, exist_ok=True)
        Image.open(path).convert("RGB").quantize(colors=128).save(Path(docs) / f"{name}.png", optimize=True)
    return path


def lesion_like_image(path: Path) -> Path:
    """A brown blotch on skin tone, 128 px (synthetic)."""
    from PIL import Image

    yy, xx = np.mgrid[:128, :128]
    blotch = (((xx - 60) / 38.0) ** 2 + ((yy - 68) / 30.0) ** 2) < 1
    rgb = np.where(blotch[..., None], [92, 58, 40], [222, 180, 160]).astype(np.uint8)
    rgb = np.clip(rgb + np.random.default_rng(0).normal(0, 6, rgb.shape), 0, 255).astype(np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def test_lesion_app_in_a_browser(open_app, tmp_path):
    from PIL import Image

    page, demo = open_app("lesion")
    image = lesion_like_image(tmp_path / "lesion.png")
    expected, _, _ = demo.predict(Image.open(image))
    call = "Melanoma" if expected["melanoma"] >= demo.metrics["threshold"] else "Not melanoma"
    page.locator("#image input[type=file]").set_input_files(str(image))
    page.locator("#image img").first.wait_for()
    page.click("#classify")
    decision = page.locator("#decision")
    sync_api.expect(decision.locator("h2")).to_have_text(call)  # the one decision, as the heading
    sync_api.expect(decision).to_contain_text(f"{expected['melanoma']:.3f}")
    sync_api.expect(decision).to_contain_text("the run's operating threshold")
    probs = page.locator("#probabilities")  # secondary: both probabilities in plain text
    sync_api.expect(probs).to_contain_text(f"Melanoma {expected['melanoma']:.3f}")
    sync_api.expect(probs).to_contain_text(f"Not melanoma {expected['not_melanoma']:.3f}")
    page.locator("#saliency img").first.wait_for()
    sync_api.expect(page.get_by_text("V-VI")).to_be_visible()
    screenshot(page, tmp_path, "lesion")
    page.screenshot(path=str(tmp_path / "lesion_full.png"), full_page=True)


def test_clinical_app_in_a_browser(open_app, tmp_path):
    page, demo = open_app("clinical")
    note = (
        "72-year-old admitted with septic shock and acute kidney injury; intubated, on norepinephrine. "
        "Lactate rising overnight. Family meeting planned."
    )
    text, _, _ = demo.predict(note)
    risk = re.search(r"\*\*(\d+\.\d%)\*\*", text).group(1)
    page.fill("#note textarea", note)
    page.click("#estimate")
    sync_api.expect(page.locator("#risk")).to_contain_text(f"Calibrated risk of in-hospital death: {risk}")
    sync_api.expect(page.locator("#attributions")).to_contain_text("norepinephrine")
    screenshot(page, tmp_path, "clinical")


def test_qa_app_streams_a_reply_in_a_browser(open_app, tmp_path):
    page, demo = open_app("qa", max_new_tokens=16)
    question = "What is the first-line treatment of anaphylaxis?"
    expected = list(demo.stream_reply(question))[-1]
    sync_api.expect(page.locator("#disclaimer")).to_contain_text("not medical advice")
    sync_api.expect(page.locator("#stop")).to_be_visible()
    page.fill("#message textarea", question)
    page.click("#send")
    bot = page.locator('#chat [data-testid="bot"]').last
    words = expected.split()
    sync_api.expect(bot).to_contain_text(words[-1] if words else expected)
    assert " ".join(bot.inner_text().split()) == " ".join(expected.split())
    sync_api.expect(page.locator('#chat [data-testid="user"]').last).to_contain_text(question)
    screenshot(page, tmp_path, "qa")


def test_image_diffusion_app_fills_the_gallery_in_a_browser(open_app, tmp_path):
    page, _ = open_app("image_diffusion")
    page.click("#generate")  # defaults: melanoma, 4 images, seed 0, 25 steps
    images = page.locator("#gallery .thumbnail-item img")
    sync_api.expect(images).to_have_count(4)
    sync_api.expect(images.first).to_have_attribute("alt", re.compile("synthetic melanoma"))
    screenshot(page, tmp_path, "image_diffusion")


def test_molecule_app_shows_smiles_depictions_and_sdf_in_a_browser(open_app, tmp_path):
    page, demo = open_app("molecules")
    _, rows, _ = demo.generate(4, 0, 20, 0)  # the app's defaults: 4 molecules, sizes as in training, all steps
    page.click("#generate")
    table = page.locator("#smiles")
    for _, _, smiles in rows:
        sync_api.expect(table).to_contain_text(smiles)
    valid = sum(not s.startswith("invalid") for _, _, s in rows)
    sync_api.expect(page.locator("#depictions .thumbnail-item img")).to_have_count(valid)
    sdf = page.locator("#sdf a").first
    sync_api.expect(sdf).to_have_attribute("download", "molecules.sdf")
    assert page.request.get(sdf.get_attribute("href")).text().count("$$$$") == len(rows)  # the download works
    screenshot(page, tmp_path, "molecules")
