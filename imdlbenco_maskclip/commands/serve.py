"""``benco serve``: a local web page that shows a checkpoint's masks for dropped images."""

from __future__ import annotations

import argparse
from dataclasses import replace

from imdlbenco_maskclip.commands import predict, shared
from imdlbenco_maskclip.run_config import Option

OPTIONS = [
    shared.CHECKPOINT,
    shared.CHECKPOINT_MODEL,
    *(o for o in predict.OPTIONS if o.name in ("image_size", "if_padding", "amp")),
    shared.DEVICE,
    replace(predict.MAX_PIXELS, default=40_000_000, help="larger images are refused with a message on the page (0: no limit)"),
    Option("max_file_size", str, "25mb", "largest upload the page accepts, e.g. 25mb", metavar="SIZE"),
    Option("host", str, "127.0.0.1", "address to listen on; 0.0.0.0 makes the page reachable from other machines"),
    Option("port", int, 7860, "port to listen on", metavar="N"),
]


def configure(parser: argparse.ArgumentParser) -> None:
    shared.configure(parser, OPTIONS, model_flags=False)


def run(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from imdlbenco_maskclip import run_config

    config = run_config.resolve(OPTIONS, args, args.config)
    values = config.values
    shared.require(values, "checkpoint")
    from imdlbenco_maskclip import photos, serve
    from imdlbenco_maskclip.predictor import Predictor

    serve.import_gradio()  # before the model loads: a missing extra is said at once
    predictor = Predictor.from_checkpoint(
        values["checkpoint"], values["device"], values["image_size"], values["amp"],
        padding=True if values["if_padding"] else None, max_pixels=photos.allow_pixels(values["max_pixels"]),
        model_name=values["model"], **config.model_args,
    )
    with tempfile.TemporaryDirectory(prefix="benco-serve-") as folder:
        app = serve.build_app(predictor, serve.write_examples(Path(folder)))
        serve.launch(app, values["host"], values["port"], values["max_file_size"])
    return 0
