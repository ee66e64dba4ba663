"""``benco test --perturb``: specs and their errors, what each kind does to the pixels (and not to
the masks) through OpenSDI and Benco datasets, determinism, and the results files end to end."""

from __future__ import annotations

import csv
import itertools
import json
import pickle

import numpy as np
import pytest
import torch

from dataset_adapters import OpenSDIDataset
from imdlbenco_maskclip.cli import benco
from imdlbenco_maskclip.common.errors import UserError
from imdlbenco_maskclip.evaluation.perturbations import KINDS, Perturbation, PerturbImage, parse_specs
from imdlbenco_maskclip.host.datasets import DatasetOptions, open_dataset

SIZE = 64
ONE_OF_EACH = parse_specs(["jpeg:50", "blur:7", "noise:10", "resize:0.5"])


def _image(seed: int = 0, shape: tuple[int, ...] = (45, 61, 3)) -> np.ndarray:
    """A smooth gradient with some texture, like a photo more than like white noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: shape[0], : shape[1]]
    base = 120 + 80 * np.sin(x / 9.0) * np.cos(y / 13.0)
    channels = [base + 30 * c for c in range(shape[2])] if len(shape) == 3 else [base]
    image = np.stack(channels, axis=-1) if len(shape) == 3 else channels[0]
    return np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)


def test_specs_parse_into_levels_in_order():
    levels = parse_specs(["jpeg:50,70,90", "blur:3,7", "noise:5,10", "resize:0.5,0.75"])
    assert [level.key for level in levels] == [
        "jpeg:50",
        "jpeg:70",
        "jpeg:90",
        "blur:3",
        "blur:7",
        "noise:5",
        "noise:10",
        "resize:0.5",
        "resize:0.75",
    ]
    assert levels[0] == Perturbation("jpeg", 50) and levels[-1] == Perturbation("resize", 0.75)
    assert parse_specs(["noise:2.5"])[0].key == "noise:2.5"
    assert parse_specs([]) == []


@pytest.mark.parametrize(
    "spec, message",
    [
        ("jpg:50", "--perturb: unknown kind 'jpg' (jpeg, blur, noise, resize)"),
        ("jpeg", "--perturb: 'jpeg' is not KIND:VALUE[,VALUE...]"),
        ("jpeg:", "--perturb: 'jpeg:' is not KIND:VALUE[,VALUE...]"),
        ("jpeg:high", "--perturb: bad value 'high' in 'jpeg:high': JPEG quality must be an integer from 1 to 100"),
        ("jpeg:50,0", "--perturb: bad value '0' in 'jpeg:50,0': JPEG quality"),
        ("jpeg:50,,70", "--perturb: bad value '' in 'jpeg:50,,70'"),
        ("blur:4", "--perturb: bad value '4' in 'blur:4': the blur kernel size must be an odd integer >= 3"),
        ("blur:1", "--perturb: bad value '1' in 'blur:1': the blur kernel size must be an odd integer"),
        ("noise:-5", "--perturb: bad value '-5' in 'noise:-5': the noise std must be a number > 0"),
        ("noise:nan", "--perturb: bad value 'nan' in 'noise:nan'"),
        (
            "resize:1.5",
            "--perturb: bad value '1.5' in 'resize:1.5': the resize factor must be a number between 0 and 1",
        ),
    ],
)
def test_bad_specs_name_the_flag_and_the_token(spec, message):
    with pytest.raises(UserError) as error:
        parse_specs([spec])
    assert str(error.value).startswith(message), str(error.value)


def test_a_level_given_twice_is_refused():
    with pytest.raises(UserError, match="--perturb: noise:5 is given twice"):
        parse_specs(["noise:5", "noise:5.0"])


@pytest.mark.parametrize("shape", [(45, 61, 3), (45, 61)])
@pytest.mark.parametrize("level", ONE_OF_EACH, ids=lambda level: level.key)
def test_each_kind_changes_pixels_and_keeps_shape_and_dtype(level, shape):
    image = _image(shape=shape)
    before = image.copy()
    out = level.apply(image)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - image).mean() > 0.5
    assert np.array_equal(image, before)  # the input is not changed in place
    assert set(KINDS) == {level.kind for level in ONE_OF_EACH}


def test_noise_is_seeded_by_the_seed_and_the_pixels():
    noise = Perturbation("noise", 10)
    image = _image()
    assert np.array_equal(noise.apply(image, 0), noise.apply(image.copy(), 0))
    assert not np.array_equal(noise.apply(image, 0), noise.apply(image, 1))
    other = _image(seed=1)
    assert not np.array_equal(noise.apply(image, 0).astype(int) - image, noise.apply(other, 0).astype(int) - other)
    spread = noise.apply(np.full((200, 200), 128, np.uint8), 0).astype(float) - 128
    assert spread.std() == pytest.approx(10, rel=0.05) and abs(spread.mean()) < 0.5
    for level in ONE_OF_EACH:  # every kind: same seed, same pixels
        assert np.array_equal(level.apply(image, 3), level.apply(image, 3))


def test_noise_does_not_depend_on_the_reading_order_or_the_workers(opensdi_root):
    dataset = open_dataset(
        str(opensdi_root), DatasetOptions(SIZE, transforms=PerturbImage(Perturbation("noise", 10.0), 0)), ["sd15"]
    )
    forward = [dataset[i]["image"] for i in range(len(dataset))]
    backward = [dataset[i]["image"] for i in reversed(range(len(dataset)))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(forward, backward))
    from torch.utils.data import DataLoader

    in_workers = [batch["image"][0] for batch in DataLoader(dataset, batch_size=1, num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(forward, in_workers))


def test_lower_jpeg_quality_is_further_from_the_clean_image():
    image = _image()
    errors = [np.abs(Perturbation("jpeg", q).apply(image).astype(float) - image).mean() for q in (10, 30, 50, 70, 90)]
    assert all(low > high for low, high in itertools.pairwise(errors)), errors


def test_stronger_blur_noise_and_resize_are_further_from_the_clean_image():
    image = _image()
    for weak, strong in [("blur:3", "blur:7"), ("noise:5", "noise:10"), ("resize:0.75", "resize:0.25")]:
        errors = [np.abs(level.apply(image).astype(float) - image).mean() for level in parse_specs([weak, strong])]
        assert errors[0] < errors[1], (weak, strong)


def _samples(path: str, transforms=None) -> list[dict]:
    dataset = open_dataset(path, DatasetOptions(SIZE, transforms=transforms), ["sd15"] if "mani" not in path else None)
    return [dataset[i] for i in range(len(dataset))]


@pytest.mark.parametrize("source", ["opensdi_root", "mani_export"])
def test_datasets_perturb_the_image_and_leave_mask_and_label(source, request):
    path = str(request.getfixturevalue(source))
    clean = _samples(path)
    for level in ONE_OF_EACH:
        perturbed = _samples(path, PerturbImage(level, seed=0))
        assert [s["name"] for s in perturbed] == [s["name"] for s in clean]
        changed = 0
        for a, b in zip(clean, perturbed):
            assert b["image"].shape == a["image"].shape and b["image"].dtype == a["image"].dtype
            assert b["mask"].dtype == a["mask"].dtype and np.array_equal(b["mask"].numpy(), a["mask"].numpy())
            assert b["label"] == a["label"]
            changed += not np.array_equal(b["image"].numpy(), a["image"].numpy())
        assert changed == len(clean), level.key


def test_a_fake_whose_mask_is_black_stays_fake_under_a_perturbation(tmp_path):
    """The label follows the stored one: only a transform that changes the mask (a crop) may change it."""
    import io

    from PIL import Image

    from dataset_adapters.synthetic import write_opensdi_shard

    def png(array: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        return buffer.getvalue()

    image = png(_image(3, (32, 32, 3)))
    black = png(np.zeros((32, 32, 3), np.uint8))
    write_opensdi_shard(
        tmp_path / "data" / "sd15-00000-of-00001.parquet", [("partial/sd15/fake/0.png", image, black, 1)]
    )
    for transforms in (None, PerturbImage(Perturbation("noise", 5.0), 0)):
        (sample,) = _samples(str(tmp_path), transforms)
        assert sample["label"] == 1 and float(sample["mask"].sum()) == 0.0


def test_the_perturbation_comes_before_the_models_resize(opensdi_root):
    """A sample of a perturbed OpenSDIDataset is the perturbed full-size image, then resized."""
    level = Perturbation("noise", 10)
    dataset = OpenSDIDataset(
        opensdi_root,
        generators=["flux"],
        is_resizing=True,
        output_size=(SIZE // 2, SIZE // 2),
        common_transforms=PerturbImage(level, seed=5),
    )
    for i in range(3):
        image, _, _ = dataset._load(i)
        expected = dataset.post_transform(image=level.apply(image, 5), masks=[np.zeros(image.shape[:2])])["image"]
        assert np.array_equal(dataset[i]["image"].numpy(), expected.numpy())


def test_the_transform_survives_pickling_for_dataloader_workers():
    transform = PerturbImage(Perturbation("noise", 5), seed=2)
    mask = np.zeros((45, 61, 3), np.uint8)
    copy = pickle.loads(pickle.dumps(transform))
    out, out_copy = transform(image=_image(), mask=mask), copy(image=_image(), mask=mask)
    assert np.array_equal(out["image"], out_copy["image"]) and out["mask"] is mask


def _benco_test(checkpoint, data, output_dir, *extra: str) -> None:
    assert (
        benco.main(
            [
                "test",
                "--checkpoint",
                str(checkpoint),
                "--test_data_path",
                str(data),
                "--generators",
                "sd15",
                "flux",
                "--image_size",
                str(SIZE),
                "--test_batch_size",
                "8",
                "--num_workers",
                "0",
                "--device",
                "cpu",
                "--output_dir",
                str(output_dir),
                *extra,
            ]
        )
        == 0
    )


def _csv(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_benco_test_scores_each_level_beside_the_unchanged_clean_rows(tiny_checkpoint, opensdi_root, tmp_path, capsys):
    _benco_test(tiny_checkpoint, opensdi_root, tmp_path / "clean")
    _benco_test(tiny_checkpoint, opensdi_root, tmp_path / "perturbed", "--perturb", "jpeg:50", "noise:10")
    err = capsys.readouterr().err
    assert "perturbation 1/2: jpeg:50" in err and "perturbation 2/2: noise:10" in err

    clean = json.loads((tmp_path / "clean" / "opensdi_results.json").read_text())
    results = json.loads((tmp_path / "perturbed" / "opensdi_results.json").read_text())
    assert "perturbations" not in clean
    assert results["splits"] == clean["splits"] and results["mean"] == clean["mean"]
    assert list(results["perturbations"]) == ["jpeg:50", "noise:10"] and results["perturb_seed"] == 0
    for level in results["perturbations"].values():
        assert set(level) == {"splits", "mean"} and level["mean"]["split"] == "mean"
        assert [row["split"] for row in level["splits"]] == ["sd15", "flux"]
        for row, clean_row in zip(level["splits"], clean["splits"]):
            assert list(row) == [k for k in clean_row if k != "ci95"]  # the clean rows' columns; no intervals
            assert {k: row[k] for k in ("n_pixel", "n_images", "n_real", "n_fake")} == {
                k: clean_row[k] for k in ("n_pixel", "n_images", "n_real", "n_fake")
            }
        assert level["splits"] != clean["splits"]

    markdown = (tmp_path / "perturbed" / "opensdi_results.md").read_text()
    assert "## Perturbations" in markdown and "### jpeg:50" in markdown and "### noise:10" in markdown
    assert markdown.startswith((tmp_path / "clean" / "opensdi_results.md").read_text())

    clean_rows = _csv(tmp_path / "clean" / "opensdi_results.csv")
    rows = _csv(tmp_path / "perturbed" / "opensdi_results.csv")
    assert "perturbation" not in clean_rows[0]
    assert [(r["perturbation"], r["split"]) for r in rows] == [
        (level, split) for level in ("none", "jpeg:50", "noise:10") for split in ("sd15", "flux", "mean")
    ]
    assert [{k: v for k, v in r.items() if k != "perturbation"} for r in rows[:3]] == clean_rows
    assert (tmp_path / "perturbed" / "per_image.csv").read_text() == (tmp_path / "clean" / "per_image.csv").read_text()


def test_benco_test_refuses_a_bad_spec_before_loading_anything(tmp_path, capsys):
    code = benco.main(
        [
            "test",
            "--checkpoint",
            str(tmp_path / "missing.pth"),
            "--test_data_path",
            str(tmp_path),
            "--perturb",
            "jpeg:50",
            "jpg:70",
        ]
    )
    assert code == 2
    assert "benco test: error: --perturb: unknown kind 'jpg' (jpeg, blur, noise, resize)" in capsys.readouterr().err
