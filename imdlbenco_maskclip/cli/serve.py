"""``benco serve``: a local web page that shows a checkpoint's masks for dropped images."""

from __future__ import annotations

import argparse
from dataclasses import replace

from imdlbenco_maskclip.cli import options, predict
from imdlbenco_maskclip.cli.options import Option


def queue_length(text: str) -> int:
    """A queue length: at least 1."""
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


OPTIONS = [
    options.CHECKPOINT,
    options.CHECKPOINT_MODEL,
    *(o for o in predict.OPTIONS if o.name in ("image_size", "if_padding", "amp", "threshold")),
    options.DEVICE,
    replace(
        predict.MAX_PIXELS,
        default=40_000_000,
        help="larger images are refused with a message on the page (0: no limit)",
    ),
    Option("max_file_size", str, "25mb", "largest upload the page accepts, e.g. 25mb", metavar="SIZE"),
    Option(
        "max_queue",
        queue_length,
        16,
        "requests that may wait for the model (which runs one at a time); one more gets a busy answer at once",
        metavar="N",
    ),
    Option("host", str, "127.0.0.1", "address to listen on; 0.0.0.0 makes the page reachable from other machines"),
    Option("port", int, 7860, "port to listen on", metavar="N"),
]


def configure(parser: argparse.ArgumentParser) -> None:
    options.configure(parser, OPTIONS, model_flags=False)


def run(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from imdlbenco_maskclip.inference import web_page

    config = options.resolve(OPTIONS, args, args.config)
    values = config.values
    options.require(values, "checkpoint")
    web_page.import_gradio()  # before the model loads: a missing extra is said at once
    predictor = predict.build_predictor(config)
    with tempfile.TemporaryDirectory(prefix="benco-serve-") as folder:
        app = web_page.build_app(predictor, web_page.write_examples(Path(folder)), values["max_queue"])
        web_page.launch(app, values["host"], values["port"], values["max_file_size"])
    return 0
