"""``benco serve``'s options: without gradio it says how to install it; the threshold and the precision
it predicts with (runs without the serve extra)."""

from __future__ import annotations

import sys

import pytest
from PIL import Image

from imdlbenco_maskclip.cli import benco


def test_serve_without_gradio_says_how_to_install_it(tiny_checkpoint, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # what Python does when gradio is not installed
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    assert benco.main(["serve", "--checkpoint", str(tiny_checkpoint)]) == 2
    assert 'pip install -e ".[serve]"' in capsys.readouterr().err


def test_serve_help_lists_its_limits(capsys):
    with pytest.raises(SystemExit) as exit:
        benco.main(["serve", "--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--checkpoint", "--host", "--port", "--max_pixels", "--max_file_size", "--max_queue"):
        assert flag in out
    assert "127.0.0.1" in out and "7860" in out


def test_serve_and_predict_take_the_checkpoints_threshold_unless_given(tiny_checkpoint, tmp_path):
    import torch

    from imdlbenco_maskclip.cli import options, predict, serve

    chosen = tmp_path / "chosen.pth"
    torch.save({**torch.load(tiny_checkpoint, map_location="cpu", weights_only=False), "val_threshold": 0.3}, chosen)
    parser = benco.build_parser()
    for argv, table, expected in (
        (["serve"], serve.OPTIONS, 0.3),
        (["predict", "photo.jpg"], predict.OPTIONS, 0.3),
        (["serve", "--threshold", "0.65"], serve.OPTIONS, 0.65),
    ):
        args = parser.parse_args([*argv, "--checkpoint", str(chosen), "--device", "cpu"])
        assert predict.build_predictor(options.resolve(table, args, None)).threshold == expected


def test_serve_and_predict_default_to_bf16_on_a_cpu_that_computes_it(tiny_checkpoint, monkeypatch):
    from imdlbenco_maskclip.cli import options, predict, serve
    from imdlbenco_maskclip.common import precision

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # --max_pixels sets it for the process
    monkeypatch.setattr(precision, "cpu_computes_bf16", lambda: True)
    parser = benco.build_parser()
    for argv, table, expected in (
        (["serve"], serve.OPTIONS, "bfloat16"),
        (["predict", "photo.jpg"], predict.OPTIONS, "bfloat16"),
        (["serve", "--amp", "off"], serve.OPTIONS, "float32"),
    ):
        args = parser.parse_args([*argv, "--checkpoint", str(tiny_checkpoint), "--device", "cpu"])
        assert predict.build_predictor(options.resolve(table, args, None)).precision == expected
