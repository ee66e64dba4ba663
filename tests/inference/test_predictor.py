"""``Predictor`` and ``benco predict`` on every kind of photo people have, and on files that are not."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imdlbenco_maskclip import Predictor
from imdlbenco_maskclip.cli import benco
from imdlbenco_maskclip.common import precision
from imdlbenco_maskclip.common.precision import INFERENCE, autocast_dtype, precision_name
from imdlbenco_maskclip.inference.photos import UnreadableImage
from imdlbenco_maskclip.inference.predictor import fit_inside

TINY_IMAGE_SIZE = 64  # the tiny_checkpoint fixture's run

ORIENTATION = 0x0112


class RednessModel(torch.nn.Module):
    """A model whose mask is each pixel's red value and whose fake probability is the image's mean
    red: what it returns shows exactly which pixels, at which place, reached it."""

    def forward(self, image: torch.Tensor, **_: object) -> dict:
        red = (image[:, :1] * 0.229 + 0.485).clamp(0, 1)
        return {"pred_mask": red, "pred_label": red.mean(dim=(1, 2, 3))}


class AutocastProbe(RednessModel):
    """``RednessModel`` that notes the CPU autocast dtype each forward runs under (None: none)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.dtype | None] = []

    def forward(self, image: torch.Tensor, **kwargs: object) -> dict:
        self.seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return super().forward(image, **kwargs)


def red_left_half(width: int, height: int) -> np.ndarray:
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2, 0] = 255
    return pixels


def write_photos(folder: Path) -> dict[str, tuple[int, int]]:
    """One file of each kind a camera, a scanner or an editor writes; name -> displayed (width, height)."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # stored 40x30, shown rotated a quarter turn: 30x40
    Image.fromarray(rgb).save(folder / "rotated.jpg", exif=exif)
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray((rng.integers(0, 65536, (30, 40))).astype(np.uint16)).save(folder / "sixteen.png")
    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=16).save(folder / "palette.png")
    Image.fromarray(rgb[..., 0]).save(folder / "gray.png")
    Image.fromarray(rgb).convert("LA").save(folder / "gray_alpha.png")
    Image.fromarray(np.dstack([rgb, np.full((30, 40), 128, np.uint8)])).save(folder / "alpha.png")
    Image.fromarray(rgb).save(folder / "photo.webp")
    Image.fromarray(rgb).save(folder / "scan.tiff")
    shown = {
        name: (40, 30)
        for name in (
            "cmyk.jpg",
            "sixteen.png",
            "palette.png",
            "gray.png",
            "gray_alpha.png",
            "alpha.png",
            "photo.webp",
            "scan.tiff",
        )
    }
    return {**shown, "rotated.jpg": (30, 40)}


def write_bad_files(folder: Path) -> dict[str, str]:
    """Files a folder of photos also holds; name -> a word the reason must contain."""
    (folder / "notes.jpg").write_text("not a picture\n")
    whole = folder / "whole.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(whole)
    (folder / "truncated.jpg").write_bytes(whole.read_bytes()[:600])
    whole.unlink()
    Image.new("RGB", (300, 200)).save(folder / "huge.png")
    return {"notes.jpg": "not an image", "truncated.jpg": "truncated", "huge.png": "60,000 pixels"}


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint) -> Predictor:
    return Predictor.from_checkpoint(tiny_checkpoint, device="cpu")


def check(result, width: int, height: int) -> None:
    assert result.mask.shape == (height, width) and result.mask.dtype == np.float32
    assert 0.0 <= result.mask.min() <= result.mask.max() <= 1.0
    assert 0.0 <= result.fake_probability <= 1.0
    assert result.overlay().size == (width, height) and result.overlay().mode == "RGB"


def test_from_checkpoint_uses_the_runs_image_size(predictor, tiny_checkpoint, tmp_path):
    assert predictor.image_size == TINY_IMAGE_SIZE and predictor.padding is False
    assert Predictor.from_checkpoint(tiny_checkpoint, device="cpu", image_size=96).image_size == 96
    bare = tmp_path / "weights_only.pth"
    payload = torch.load(tiny_checkpoint, map_location="cpu", weights_only=False)
    torch.save({"model": payload["model"], "model_name": "MaskCLIP", "model_args": {"setting": "tiny"}}, bare)
    assert Predictor.from_checkpoint(bare, device="cpu").image_size == 512


def test_every_kind_of_photo(predictor, tmp_path):
    sizes = write_photos(tmp_path)
    for name, (width, height) in sizes.items():
        check(predictor.predict(tmp_path / name), width, height)
        check(predictor.predict(str(tmp_path / name)), width, height)
    pixels = np.random.default_rng(2).integers(0, 256, (33, 47, 3), dtype=np.uint8)
    check(predictor.predict(pixels), 47, 33)
    check(predictor.predict(Image.fromarray(pixels)), 47, 33)
    with Image.open(tmp_path / "rotated.jpg") as opened:  # a PIL image keeps its EXIF: shown upright too
        check(predictor.predict(opened), 30, 40)


def test_pixels_are_read_as_a_viewer_shows_them(tmp_path):
    predictor = Predictor(RednessModel(), image_size=64)
    stored = np.zeros((30, 40, 3), np.uint8)
    stored[:10, :, 0] = 255  # red top rows as stored
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # displayed rotated 90 degrees clockwise: the red rows become the right columns
    Image.fromarray(stored).save(tmp_path / "rotated.png", exif=exif)
    mask = predictor.predict(tmp_path / "rotated.png").mask
    assert mask.shape == (40, 30)
    assert mask[:, -5:].mean() > 0.9 and mask[:, :15].mean() < 0.1

    Image.fromarray(np.full((20, 20), 32896, np.uint16)).save(tmp_path / "mid_gray16.png")  # 128 * 257
    with Image.open(tmp_path / "mid_gray16.png") as check_mode:
        assert check_mode.mode == "I;16"
    shown = np.asarray(predictor.predict(tmp_path / "mid_gray16.png").image)
    assert np.abs(shown.astype(int) - 128).max() <= 1  # scaled from 16 bits, not clipped to white

    transparent = np.zeros((20, 20, 4), np.uint8)  # fully transparent black reads as the white a viewer shows
    Image.fromarray(transparent).save(tmp_path / "clear.png")
    assert np.asarray(predictor.predict(tmp_path / "clear.png").image).min() == 255


def test_unreadable_files_raise_or_are_skipped_in_order(predictor, tmp_path):
    reasons = write_bad_files(tmp_path)
    write_photos(tmp_path)
    strict = Predictor(predictor.model, TINY_IMAGE_SIZE, max_pixels=50_000)
    for name, word in reasons.items():
        with pytest.raises(UnreadableImage, match=word):
            strict.predict(tmp_path / name)
    order = ["gray.png", "notes.jpg", "cmyk.jpg", "truncated.jpg", "huge.png", "photo.webp"]
    results = list(strict.predict_many([tmp_path / n for n in order], batch_size=4, skip_unreadable=True))
    assert [r.name for r in results] == order
    assert [r.error is None for r in results] == [True, False, True, False, False, True]
    assert all(r.mask is None and r.fake_probability is None for r in results if r.error)
    with pytest.raises(UnreadableImage, match="notes.jpg"):
        list(strict.predict_many([tmp_path / n for n in order], batch_size=4))


def test_pillows_own_limit_is_a_reason_not_a_traceback(predictor, tmp_path, monkeypatch):
    Image.new("RGB", (100, 100)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses more than twice its limit
    no_limit_of_ours = Predictor(predictor.model, TINY_IMAGE_SIZE, max_pixels=0)
    with pytest.raises(UnreadableImage, match="MAX_IMAGE_PIXELS"):
        no_limit_of_ours.predict(tmp_path / "bomb.png")


@pytest.mark.parametrize("amp, tolerance", [("off", 1e-5), ("bf16", 0.02)])  # bf16: the agreement bound
def test_predict_many_batches_give_the_single_image_answers(tiny_checkpoint, amp, tolerance):
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", amp=amp)
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (20 + 7 * i, 50 - 5 * i, 3), dtype=np.uint8) for i in range(5)]
    batched = list(predictor.predict_many(images, batch_size=2))
    assert [r.name for r in batched] == [f"image{i}" for i in range(5)]
    for image, result in zip(images, batched):
        alone = predictor.predict(image)
        assert result.mask.shape == image.shape[:2]
        np.testing.assert_allclose(result.mask, alone.mask, atol=tolerance)
        assert result.fake_probability == pytest.approx(alone.fake_probability, abs=tolerance / 2)


@pytest.mark.parametrize("native, computed_in", [(True, torch.bfloat16), (False, None)])
def test_by_default_the_cpu_computes_in_bf16_where_it_computes_bf16_natively(monkeypatch, native, computed_in):
    monkeypatch.setattr(precision, "cpu_computes_bf16", lambda: native)
    model = AutocastProbe()
    predictor = Predictor(model, image_size=32)  # amp left out: auto
    predictor.predict(red_left_half(40, 30))
    assert model.seen == [computed_in] and predictor.precision == precision_name(computed_in)
    model.seen.clear()
    Predictor(model, image_size=32, amp="off").predict(red_left_half(40, 30))  # given: used as given
    assert model.seen == [None]


def test_the_prompt_features_are_computed_once_for_many_predictions(predictor):
    """In eval mode the text tower's output does not change between images: a second photo
    costs an image forward only (a per-call text forward was a quarter of a 512-px predict)."""
    runs = []
    hook = predictor.model.prompts.register_forward_hook(lambda *_: runs.append(1))
    predictor.model.train()  # handed over in training mode: put in eval mode once
    try:
        for _ in range(3):
            predictor.predict(np.zeros((40, 40, 3), np.uint8))
    finally:
        hook.remove()
    assert len(runs) == 1 and not predictor.model.training


@pytest.mark.parametrize("width, height", [(150, 96), (40, 24)])
def test_padding_keeps_every_pixel_in_place(width, height):
    """Larger than the model's size: shrunk to fit, then padded; smaller: padded. Either way the
    mask is the whole image, at its own size (Benco's padding alone would crop to the top-left)."""
    predictor = Predictor(RednessModel(), image_size=64, padding=True)
    result = predictor.predict(red_left_half(width, height))
    assert result.mask.shape == (height, width)
    assert result.mask[:, : width // 2 - 3].min() > 0.95 and result.mask[:, width // 2 + 3 :].max() < 0.05
    shown_width, shown_height = fit_inside((width, height), 64)  # the red half's share of the padded canvas:
    assert result.fake_probability == pytest.approx(0.5 * shown_width * shown_height / 64**2, abs=0.02)
    assert result.overlay().size == (width, height)


def test_benco_predict_skips_what_it_cannot_read_and_goes_on(tiny_checkpoint, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # --max_pixels sets it for the process
    photos = tmp_path / "photos"
    photos.mkdir()
    sizes = write_photos(photos)
    reasons = write_bad_files(photos)
    Image.fromarray(red_left_half(150, 96)).save(photos / "large.png")  # larger than the run's 64 px: shrunk, padded
    sizes["large.png"] = (150, 96)
    output = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="imdlbenco_maskclip"):
        status = benco.main(
            [
                "predict",
                "--checkpoint",
                str(tiny_checkpoint),
                str(photos),
                "--device",
                "cpu",
                "--max_pixels",
                "50000",
                "--if_padding",
                "--batch_size",
                "3",
                "--output_dir",
                str(output),
            ]
        )
    assert status == 0
    with open(output / "predictions.csv", newline="") as handle:
        rows = {row["name"]: row for row in csv.DictReader(handle)}
    assert set(rows) == set(sizes) | set(reasons)
    for name, word in reasons.items():
        assert word in rows[name]["error"] and not rows[name]["mask"]
        assert any(name in record.getMessage() and word in record.getMessage() for record in caplog.records)
    computed_in = precision_name(autocast_dtype("auto", torch.device("cpu"), INFERENCE))  # --amp auto
    for name, (width, height) in sizes.items():
        assert not rows[name]["error"] and (int(rows[name]["width"]), int(rows[name]["height"])) == (width, height)
        assert rows[name]["precision"] == computed_in
        assert Image.open(output / rows[name]["mask"]).size == (width, height)
        assert Image.open(output / rows[name]["mask"].replace("masks/", "overlays/")).size == (width, height)
    assert len(json.loads((output / "predictions.json").read_text())) == len(rows)
    assert Image.MAX_IMAGE_PIXELS == 50_000  # Pillow's own guard agrees with --max_pixels


def test_readme_example(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(red_left_half(48, 36)).save("photo.jpg")
    checkpoint = str(tiny_checkpoint)
    # The README's five lines, with the checkpoint's path:
    from imdlbenco_maskclip import Predictor

    predictor = Predictor.from_checkpoint(checkpoint)
    result = predictor.predict("photo.jpg")
    print(result.fake_probability, result.mask.shape)
    result.overlay().save("photo_overlay.png")

    probability, shape = capsys.readouterr().out.split(" ", 1)
    assert 0.0 <= float(probability) <= 1.0 and shape.strip() == "(36, 48)"
    assert Image.open("photo_overlay.png").size == (48, 36)


def test_the_threshold_is_the_checkpoints_validation_threshold_unless_given(tiny_checkpoint, tmp_path, predictor):
    """A checkpoint chosen on held-out validation records its threshold: Predictor and benco
    predict use it (else 0.5), --threshold overrides it, and predictions.csv records it."""
    chosen = tmp_path / "chosen.pth"
    payload = torch.load(tiny_checkpoint, map_location="cpu", weights_only=False)
    torch.save({**payload, "val_threshold": 0.3}, chosen)
    assert predictor.threshold == 0.5
    validated = Predictor.from_checkpoint(chosen, device="cpu")
    assert validated.threshold == 0.3
    assert Predictor.from_checkpoint(chosen, device="cpu", threshold=0.8).threshold == 0.8
    Image.fromarray(red_left_half(48, 36)).save(tmp_path / "photo.png")
    result = validated.predict(tmp_path / "photo.png")
    assert result.threshold == 0.3 and result.manipulated_fraction == float((result.mask > 0.3).mean())
    assert np.array_equal(np.asarray(result.overlay()), np.asarray(result.overlay(0.3)))

    argv = ["predict", "--checkpoint", str(chosen), str(tmp_path / "photo.png"), "--device", "cpu"]
    assert benco.main([*argv, "--threshold", "0.75", "--output_dir", str(tmp_path / "out")]) == 0
    with open(tmp_path / "out" / "predictions.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert float(row["threshold"]) == 0.75  # the default is the checkpoint's: tests/cli/test_serve_command.py
    assert float(row["manipulated_fraction"]) == float((result.mask > 0.75).mean())
