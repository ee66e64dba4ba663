"""``benco serve``'s page in a real headless Chromium, and its ``/predict`` endpoint through gradio_client.

Needs the ``serve`` extra, playwright and Debian's chromium (``.ci/run`` installs all three).
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason='the serve extra is not installed: pip install -e ".[serve]"')
gradio_client = pytest.importorskip(
    "gradio_client", reason='the serve extra is not installed: pip install -e ".[serve]"'
)

from imdlbenco_maskclip.inference import web_page  # noqa: E402
from imdlbenco_maskclip.inference.predictor import Predictor  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
MAX_PIXELS = 200_000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def served(tiny_checkpoint, tmp_path_factory):
    """The page for the tiny checkpoint, on localhost, with small limits; yields (url, files,
    predictor, app)."""
    folder = tmp_path_factory.mktemp("serve")
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", max_pixels=MAX_PIXELS)
    examples = web_page.write_examples(folder / "examples")
    files = {
        "photo": examples[0],
        "notes": folder / "notes.jpg",
        "huge": folder / "huge.png",
        "big_file": folder / "big.png",
    }
    files["notes"].write_text("not a picture\n")
    Image.new("RGB", (600, 400)).save(files["huge"])
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)).save(files["big_file"])
    app = web_page.build_app(predictor, examples)
    url = web_page.launch(app, port=free_port(), max_file_size="200kb", block=False)
    predictor.forwards = []  # one entry per model run, to show the slider does not rerun the model
    predictor.model.register_forward_hook(lambda *_: predictor.forwards.append(1))
    yield url, files, predictor, app
    app.close()


def test_binds_to_localhost(served):
    url, _, _, _ = served
    assert url.startswith("http://127.0.0.1:")


def test_predict_endpoint_for_gradio_client(served):
    url, files, predictor, app = served
    client = gradio_client.Client(url, verbose=False)
    overlay, mask, label = client.predict(gradio_client.handle_file(str(files["photo"])), 0.5, api_name="/predict")
    width, height = Image.open(files["photo"]).size
    assert Image.open(overlay).size == (width, height) and Image.open(mask).size == (width, height)
    confidences = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert set(confidences) == {"fake", "real"} and confidences["fake"] + confidences["real"] == pytest.approx(1.0)
    assert confidences["fake"] == pytest.approx(predictor.predict(files["photo"]).fake_probability, abs=1e-6)
    assert len(app.sessions) == 1 and app.sessions.nbytes() == width * height * (3 + 4)  # this client's map and photo
    for name, message in (("notes", "not an image"), ("huge", f"more than the limit of {MAX_PIXELS:,}")):
        with pytest.raises(Exception, match=message):
            client.predict(gradio_client.handle_file(str(files[name])), 0.5, api_name="/predict")
    assert len(app.sessions) == 0  # the photo's map went with the new upload: the slider cannot redraw it
    with pytest.raises(Exception, match="(?i)size|large"):
        client.predict(gradio_client.handle_file(str(files["big_file"])), 0.5, api_name="/predict")


@pytest.mark.slow  # a browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no Chromium at /usr/bin/chromium: apt-get install -y chromium")
def test_page_in_headless_chromium(served, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install playwright")
    url, files, predictor, _ = served
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            page.locator("#input-image input[type=file]").set_input_files(str(files["photo"]))
            overlay = page.locator("#overlay img")
            overlay.wait_for(state="visible", timeout=60_000)
            page.locator("#mask img").wait_for(state="visible", timeout=10_000)
            sync_api.expect(page.locator("#probability")).to_contain_text("fake", timeout=10_000)
            sync_api.expect(page.locator("#probability")).to_contain_text("%")
            first, runs = overlay.get_attribute("src"), len(predictor.forwards)

            page.locator("#threshold input[type=range]").fill("0.05")
            sync_api.expect(overlay).not_to_have_attribute("src", first, timeout=20_000)
            assert page.locator("#threshold input[type=number]").input_value() == "0.05"
            assert len(predictor.forwards) == runs  # redrawn from the kept probability map

            page.locator("#input-image button[aria-label='Remove Image']").click()
            page.locator("#input-image input[type=file]").set_input_files(str(files["notes"]))
            sync_api.expect(page.get_by_text("not an image Pillow can read")).to_be_visible(timeout=20_000)
        finally:
            browser.close()


def test_the_threshold_slider_starts_at_the_predictors_threshold(tiny_checkpoint):
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", threshold=0.3)
    app = web_page.build_app(predictor, [])
    (slider,) = [c for c in app.config["components"] if c.get("props", {}).get("elem_id") == "threshold"]
    assert slider["props"]["value"] == 0.3
