"""The local web page of ``benco serve``: drop a photo, see where the model thinks it was edited.

A thin layer over ``Predictor`` in gradio (the ``serve`` extra). The model runs once per image;
its probability map is kept in the page's state, so moving the threshold slider only redraws
the overlay. The endpoint ``/predict`` (image and threshold in; overlay, mask and fake
probability out) is what ``gradio_client`` calls. An image that cannot be read, or is larger
than the limits, is answered with a message on the page, never a server error.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from imdlbenco_maskclip.common import pictures
from imdlbenco_maskclip.common.errors import UserError
from imdlbenco_maskclip.inference.photos import UnreadableImage
from imdlbenco_maskclip.inference.predictor import Predictor

INSTALL_HINT = (
    'benco serve needs gradio: pip install -e ".[serve]" (from a checkout) or pip install "imdlbenco-maskclip[serve]"'
)
DEFAULT_MAX_FILE_SIZE = "25mb"
EXAMPLE_KEYS = ("partial/sd15/fake", "entire/sd15/fake", "partial/sd15/real")

log = logging.getLogger(__name__)


def import_gradio() -> Any:
    """gradio, with its usage analytics off (the page is local), or a UserError saying how to install it."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return gradio


def write_examples(folder: Path, size: int = 128) -> list[Path]:
    """A partial fake, an entire fake and a real photo from the synthetic OpenSDI sample, as PNGs."""
    from dataset_adapters.rows import iter_shard_images
    from dataset_adapters.synthetic import write_synthetic_opensdi

    shards = write_synthetic_opensdi(folder / "shards", generators=("sd15",), n_per_class=1, image_size=size, seed=1)
    found: dict[str, Path] = {}
    for key, _, load in iter_shard_images(shards):
        kind = next((k for k in EXAMPLE_KEYS if key.startswith(k)), None)
        if kind and kind not in found:
            found[kind] = folder / f"{kind.replace('/sd15/', '_')}.png"
            load().save(found[kind])
    return [found[k] for k in EXAMPLE_KEYS if k in found]


def _probability_label(probability: float | None) -> dict[str, float] | None:
    return None if probability is None else {"fake": probability, "real": 1.0 - probability}


def build_app(predictor: Predictor, examples: list[Path]) -> Any:
    """The page: an image input, a threshold slider, the overlay, the mask and the fake probability."""
    gr = import_gradio()

    def analyze(upload: dict | None, threshold: float) -> tuple:
        if not upload:
            return None, None, None, None
        path = upload.get("path") if isinstance(upload, dict) else None
        if not path:
            raise gr.Error("No image arrived; upload it again.", print_exception=False)
        try:
            result = predictor.predict(Path(path))
        except UnreadableImage as error:
            raise gr.Error(str(error), title="Cannot read this image", print_exception=False) from None
        except Exception as error:
            log.exception("prediction failed on %s", path)
            raise gr.Error(
                f"The model failed on this image: {type(error).__name__}: {error}", print_exception=False
            ) from None
        if result.mask is None:
            return None, None, _probability_label(result.fake_probability), None
        state = (np.asarray(result.image), result.mask)
        return result.overlay(threshold), result.mask_image(), _probability_label(result.fake_probability), state

    def redraw(threshold: float, state: tuple | None) -> Image.Image | None:
        if state is None:
            return None
        image, mask = state
        return pictures.overlay(Image.fromarray(image), mask, threshold)

    with gr.Blocks(title="MaskCLIP: where was this image edited?") as app:
        gr.Markdown(
            "## MaskCLIP: where was this image edited?\n"
            f"{type(predictor.model).__name__} at {predictor.image_size} px. Drop a photo; red marks the pixels "
            "whose probability of being generated or edited is above the threshold "
            f"(it starts at {predictor.threshold:g})."
        )
        with gr.Row():
            with gr.Column():
                image = gr.Image(label="Image", type="filepath", sources=["upload", "clipboard"], elem_id="input-image")
                threshold = gr.Slider(
                    0.0, 1.0, value=predictor.threshold, step=0.01, label="Threshold", elem_id="threshold"
                )
                if examples:
                    gr.Examples(
                        [[str(p)] for p in examples], inputs=[image], label="Examples (synthetic OpenSDI sample)"
                    )
            with gr.Column():
                probability = gr.Label(label="Fake probability", num_top_classes=2, elem_id="probability")
                overlay = gr.Image(label="Overlay", type="pil", interactive=False, elem_id="overlay", format="png")
                mask = gr.Image(label="Mask", type="pil", interactive=False, elem_id="mask", format="png")
        state = gr.State(None)
        image.change(
            analyze,
            inputs=[image, threshold],
            outputs=[overlay, mask, probability, state],
            api_name="predict",
            preprocess=False,
        )
        threshold.change(redraw, inputs=[threshold, state], outputs=[overlay], api_visibility="private")
    return app


def launch(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 7860,
    max_file_size: str | int = DEFAULT_MAX_FILE_SIZE,
    block: bool = True,
) -> str:
    """Serve ``app`` (on localhost unless ``host`` says otherwise); returns its address."""
    gr = import_gradio()
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    _, url, _ = app.launch(
        server_name=host,
        server_port=port,
        max_file_size=max_file_size,
        share=False,
        show_error=True,
        ssr_mode=False,
        prevent_thread_lock=True,
        quiet=True,
        theme=theme,
        footer_links=["api"],
    )
    if block:
        print(f"MaskCLIP page at {url} (Ctrl+C stops it)")
        app.block_thread()
    return url
