"""``benco serve`` without gradio says how to install it (runs without the serve extra)."""

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
