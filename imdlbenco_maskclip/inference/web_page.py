"""The local web page of ``benco serve``: drop a photo, see where the model thinks it was edited.

A thin layer over ``Predictor`` in gradio (the ``serve`` extra). The model runs once per image;
the photo and its probability map are kept per visitor at display size (``sessions``), so
moving the threshold slider only redraws the overlay. The endpoint ``/predict`` (image and
threshold in; overlay, mask and fake probability out, pictures at display size) is what
``gradio_client`` calls. An image that cannot be read, or is larger than the limits, is
answered with a message on the page, never a server error.

Under load: every event (uploads and slider moves of all visitors) goes through one queue and
runs one at a time, the model on one thread of its own, so it never runs twice at once; at
most ``max_queue`` events wait, and one more is refused at once with gradio's busy answer
("This application is currently busy. Please try again."; ``gradio_client`` raises
``QueueError``) instead of waiting without end. Memory stays flat: what a visitor keeps is
bounded (``sessions``), uploads and answers are deleted from gradio's cache after
``SESSION_TTL``, and freed photo-sized blocks go back to the system (``return_freed_memory``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from imdlbenco_maskclip.common import pictures
from imdlbenco_maskclip.common.errors import UserError
from imdlbenco_maskclip.inference.photos import UnreadableImage
from imdlbenco_maskclip.inference.predictor import Predictor, fit_inside
from imdlbenco_maskclip.inference.sessions import Sessions, Shown

INSTALL_HINT = (
    'benco serve needs gradio: pip install -e ".[serve]" (from a checkout) or pip install "imdlbenco-maskclip[serve]"'
)
DEFAULT_MAX_FILE_SIZE = "25mb"
DEFAULT_MAX_QUEUE = 16
DISPLAY_SIDE = 1024
"""Longest side of the pictures the page shows and keeps (larger photos are shrunk for it)."""
SESSION_TTL = 600.0
"""Seconds a visitor's photo and map are kept after their last use (the uploaded files too)."""
MAX_SESSIONS = 32
MODEL = "model"
"""The concurrency group every event shares, with a limit of one."""
MMAP_THRESHOLD = 32 << 20
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
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


def at_display_size(image: Image.Image, probability: np.ndarray) -> Shown:
    """The photo and its map shrunk (bilinear) to at most ``DISPLAY_SIDE`` px on the longer side."""
    size = fit_inside(image.size, DISPLAY_SIDE)
    if size == image.size:
        return Shown(image, probability)
    shrunk = Image.fromarray(probability, mode="F").resize(size, Image.BILINEAR)
    return Shown(image.resize(size, Image.BILINEAR), np.asarray(shrunk, dtype=np.float32))


def _given_request(function: Callable, gr: Any) -> Callable:
    """``function`` with its ``request`` parameter annotated ``gr.Request``, which is how gradio
    knows to pass the visitor's request (gradio is imported lazily, so the annotation is set here)."""
    function.__annotations__["request"] = gr.Request
    return function


def build_app(predictor: Predictor, examples: list[Path], max_queue: int = DEFAULT_MAX_QUEUE) -> Any:
    """The page: an image input, a threshold slider, the overlay, the mask and the fake
    probability; at most ``max_queue`` events wait for the model."""
    gr = import_gradio()
    if max_queue < 1:
        raise ValueError(f"max_queue must be at least 1, got {max_queue}")
    sessions = Sessions(MAX_SESSIONS, SESSION_TTL)
    # The model runs on one thread of its own: torch's OpenMP gives each calling thread its own
    # team of worker threads, and gradio calls from a pool of up to 40 threads.
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="maskclip-model")

    def analyze(upload: dict | None, threshold: float, request: Any) -> tuple:
        sessions.drop(request.session_hash)  # a new image: the slider must never redraw the last one
        if not upload:
            return None, None, None
        path = upload.get("path") if isinstance(upload, dict) else None
        if not path:
            raise gr.Error("No image arrived; upload it again.", print_exception=False)
        try:
            result = worker.submit(predictor.predict, Path(path)).result()
        except UnreadableImage as error:
            raise gr.Error(str(error), title="Cannot read this image", print_exception=False) from None
        except Exception as error:
            log.exception("prediction failed on %s", path)
            raise gr.Error(
                f"The model failed on this image: {type(error).__name__}: {error}", print_exception=False
            ) from None
        label = _probability_label(result.fake_probability)
        if result.mask is None:
            return None, None, label
        shown = at_display_size(result.image, result.mask)
        sessions.put(request.session_hash, shown)
        return (
            pictures.overlay(shown.image, shown.probability, threshold),
            pictures.probability_png(shown.probability),
            label,
        )

    def redraw(upload: dict | None, threshold: float, request: Any) -> Any:
        if not upload:
            return None
        shown = sessions.get(request.session_hash)
        if shown is None:
            gr.Warning(
                "No probability map is kept for this image (none was made, or it went unused for "
                f"{SESSION_TTL / 60:.0f} minutes); drop it again."
            )
            return gr.skip()
        return pictures.overlay(shown.image, shown.probability, threshold)

    with gr.Blocks(title="MaskCLIP: where was this image edited?", delete_cache=(SESSION_TTL, SESSION_TTL)) as app:
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
        image.change(
            _given_request(analyze, gr),
            inputs=[image, threshold],
            outputs=[overlay, mask, probability],
            api_name="predict",
            preprocess=False,
            concurrency_limit=1,
            concurrency_id=MODEL,
        )
        threshold.change(
            _given_request(redraw, gr),
            inputs=[image, threshold],
            outputs=[overlay],
            api_visibility="private",
            preprocess=False,
            concurrency_limit=1,
            concurrency_id=MODEL,
        )
        app.unload(_given_request(lambda request: sessions.drop(request.session_hash), gr))
    app.queue(max_size=max_queue, default_concurrency_limit=1)
    app.sessions = sessions  # what the page keeps, for whoever serves it to inspect
    return app


def return_freed_memory() -> None:
    """Have glibc's malloc serve every block of ``MMAP_THRESHOLD`` bytes or more (decoded photos
    from about 11 MP, full-size float masks from 8 MP) from a mapping of its own, given back to
    the system when freed, and trim its heaps eagerly. By default both thresholds rise with the
    largest block freed so far, and photo-sized blocks then come from per-thread heaps that keep
    their high-water mark: with the tiny model, 4 clients and a queue of 2, the server's RSS grew
    by 4-11% between the 10th and the 40th request (benchmarks/serve_load.py, two runs), and by
    at most 2% with the threshold fixed. Linux only; nothing happens where the C library has no
    ``mallopt``."""
    if not sys.platform.startswith("linux"):
        return
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def launch(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 7860,
    max_file_size: str | int = DEFAULT_MAX_FILE_SIZE,
    block: bool = True,
) -> str:
    """Serve ``app`` (on localhost unless ``host`` says otherwise); returns its address."""
    gr = import_gradio()
    return_freed_memory()
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
