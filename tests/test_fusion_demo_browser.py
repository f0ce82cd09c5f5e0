"""The lesion fusion demo in headless Chromium (Playwright): upload an image, set the metadata, press Score, read
the decision and the contribution table from the page. Skipped only where chromium or playwright is missing."""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("gradio")

from test_demo_browser import FLAGS, TIMEOUT_MS, lesion_like_image, screenshot  # noqa: E402
from test_fusion_demo import tiny_fusion_run  # noqa: E402

from helpers import free_port  # noqa: E402
from hf_medai.demos import BANNER, demo_for  # noqa: E402
from hf_medai.demos.common import launch  # noqa: E402


def test_lesion_fusion_app_in_a_browser(tmp_path):
    from PIL import Image

    run = tiny_fusion_run("lesion_fusion", tmp_path / "run")
    demo = demo_for(run)
    image = lesion_like_image(tmp_path / "lesion.png")
    expected = demo.score(Image.open(image), "female", "unknown", 67)  # site left as not recorded
    call = "Melanoma" if expected.probs[1] >= demo.metrics["threshold"] else "Not melanoma"
    app = demo.build()
    port = free_port()
    launch(app, run, port=port, block=False)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1000, "height": 800})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"http://127.0.0.1:{port}/")
            sync_api.expect(page.locator("#research-banner")).to_have_text(BANNER)
            page.locator("#image input[type=file]").set_input_files(str(image))
            page.locator("#image img").first.wait_for()
            page.locator("#field-sex input").click()
            page.get_by_role("option", name="female", exact=True).click()
            page.locator("#field-age input").fill("67")
            page.click("#score")
            decision = page.locator("#decision")
            sync_api.expect(decision.locator("h2")).to_have_text(call)
            sync_api.expect(decision).to_contain_text(f"{expected.probs[1]:.3f}")
            sync_api.expect(decision).to_contain_text("the run's operating threshold")
            table = page.locator("#contributions table")
            sync_api.expect(table).to_be_visible()
            image_row = table.locator("tr", has_text="image")
            sync_api.expect(image_row).to_contain_text(f"{expected.primary_delta:+.3f}")
            metadata_row = table.locator("tr", has_text="metadata")
            sync_api.expect(metadata_row).to_contain_text("2 of 3 fields")
            sync_api.expect(metadata_row).to_contain_text(f"{expected.tabular_delta:+.3f}")
            sync_api.expect(page.locator("#contributions")).to_contain_text(
                "minus P(Melanoma) with that modality withheld"
            )
            screenshot(page, tmp_path, "lesion_fusion")
            browser.close()
    finally:
        app.close()
