"""The protocol table on crafted predictions equals metrics computed independently here."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from imdlbenco_maskclip.evaluation import protocol, report, tables
from imdlbenco_maskclip.host.datasets import DatasetOptions, protocol_datasets
from imdlbenco_maskclip.host.runtime import Runtime

SIZE = 32


class CraftedModel(torch.nn.Module):
    """Returns, for each image name, the mask and fake probability chosen by the test."""

    def __init__(self, masks: dict[str, np.ndarray], labels: dict[str, float]) -> None:
        super().__init__()
        self.masks, self.labels = masks, labels

    def forward(self, image: torch.Tensor, name: list[str], **kwargs) -> dict:
        pred_mask = torch.stack([torch.from_numpy(self.masks[n]).float()[None] for n in name])
        pred_label = torch.tensor([self.labels[n] for n in name])
        return {"pred_mask": pred_mask, "pred_label": pred_label}


def _write_mani(root, rng):
    """A Benco Tp/Gt folder: reals (black masks), whole fakes (white), partial fakes (blobs)."""
    (root / "Tp").mkdir(parents=True)
    (root / "Gt").mkdir()
    truth = {}
    for i in range(12):
        name = f"img{i:02d}.png"
        kind = ["real", "whole", "partial"][i % 3]
        mask = np.zeros((SIZE, SIZE), np.uint8)
        if kind == "whole":
            mask[:] = 255
        elif kind == "partial":
            y, x = rng.integers(0, SIZE // 2, size=2)
            mask[y : y + 12, x : x + 10] = 255
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(root / "Tp" / name)
        Image.fromarray(mask).save(root / "Gt" / name)
        truth[name] = (kind, mask > 127)
    return truth


def _expected(truth, masks, labels):
    f1s, ious, aucs, accs = [], [], [], []
    for name, (kind, gt) in truth.items():
        if kind != "partial":
            continue
        pred = masks[name] > 0.5
        tp, fp, fn = (pred & gt).sum(), (pred & ~gt).sum(), (~pred & gt).sum()
        precision, recall = tp / (tp + fp + 1e-8), tp / (tp + fn + 1e-8)
        f1s.append(2 * precision * recall / (precision + recall + 1e-8))
        ious.append(tp / (tp + fp + fn + 1e-8))
        aucs.append(roc_auc_score(gt.flatten(), masks[name].flatten()))
        accs.append((pred == gt).mean())
    y = np.array([kind != "real" for kind, _ in truth.values()], dtype=float)
    p = np.array([labels[n] for n in truth])
    hard = (p > 0.5).astype(float)
    tp, fp, fn = (hard * y).sum(), (hard * (1 - y)).sum(), ((1 - hard) * y).sum()
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    bins = np.minimum((p * 15).astype(int), 14)
    ece = sum((bins == k).mean() * abs(y[bins == k].mean() - p[bins == k].mean()) for k in set(bins.tolist()))
    reals = [n for n, (kind, _) in truth.items() if kind == "real"]
    return {
        "real_fpr": np.mean([labels[n] >= 0.5 for n in reals]),
        "real_area": np.mean([(masks[n] > 0.5).mean() for n in reals]),
        "tpr_at_fpr5": np.mean(p[y == 1] > np.percentile(p[y == 0], 95)),
        "ece": ece,
        "pixel_f1": np.mean(f1s),
        "pixel_iou": np.mean(ious),
        "pixel_auc": np.mean(aucs),
        "pixel_acc": np.mean(accs),
        "n_pixel": len(f1s),
        "image_f1": 2 * precision * recall / (precision + recall),
        "image_acc": (hard == y).mean(),
        "image_auc": roc_auc_score(y, p),
    }


@pytest.mark.parametrize("batch_size", [1, 5])
def test_protocol_table_equals_independent_metrics(tmp_path, batch_size):
    rng = np.random.default_rng(0)
    truth = _write_mani(tmp_path / "mani", rng)
    masks = {n: rng.random((SIZE, SIZE)).astype(np.float32) for n in truth}
    for name, (kind, gt) in truth.items():  # make some predictions good, so F1 is not ~random
        if kind == "partial" and name < "img06":
            masks[name] = np.where(gt, 0.9, 0.1).astype(np.float32)
    labels = {n: float(rng.random()) for n in truth}
    datasets = protocol_datasets([f"mine={tmp_path / 'mani'}"], DatasetOptions(SIZE), None)
    result = protocol.evaluate(CraftedModel(masks, labels), datasets, Runtime(torch.device("cpu")), batch_size)

    expected = _expected(truth, masks, labels)
    row = result.rows[0]
    assert row.split == "mine"
    assert row.n_images == 12 and row.n_real == 4 and row.n_fake == 8
    for key, value in expected.items():
        assert getattr(row, key) == pytest.approx(value, abs=1e-6), key
    assert result.mean.pixel_f1 == pytest.approx(expected["pixel_f1"], abs=1e-6)

    written = tables.write_results(result, tmp_path / "out", "Crafted", "none.pth", compare=True)
    saved = json.loads((tmp_path / "out" / "opensdi_results.json").read_text())
    assert saved["splits"][0]["image_auc"] == pytest.approx(expected["image_auc"])
    with open(tmp_path / "out" / "per_image.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 12
    assert {p.name for p in written} == {
        "opensdi_results.json",
        "opensdi_results.md",
        "opensdi_results.csv",
        "per_image.csv",
    }
    assert "MaskCLIP (paper)" in (tmp_path / "out" / "opensdi_results.md").read_text()


def test_masked_fakes_excludes_reals_and_whole_fakes():
    mask = torch.zeros(4, 1, 4, 4)
    mask[1] = 1
    mask[2, :, :2] = 1
    mask[3, :, :2] = 1
    label = torch.tensor([0, 1, 1, 0])
    assert protocol.masked_fakes(mask, label, None).tolist() == [False, False, True, False]
    padded = torch.zeros(4, 1, 4, 4)
    padded[:, :, :2] = 1  # only the top half is image; mask 2 is white there
    assert protocol.masked_fakes(mask, label, padded).tolist() == [False, False, False, False]


def record(name: str, label: int, masked_fake: bool) -> protocol.ImageRecord:
    return protocol.ImageRecord(
        "sd15", 0, name, label, masked_fake, False, None, {"pixel_f1": 0.5, "pixel_iou": 0.4} if label else {}
    )


def test_localization_counts_the_keys_the_published_test_counts():
    """Keys containing 'partial' and 'fake', whatever the mask; unprefixed keys of a keyed split
    (the sd15 test split has some) are not counted."""
    records = protocol.mark_partial_fakes(
        [
            record("partial/sd15/fake/1.jpg", 1, True),
            record("partial/sd15/fake/2.jpg", 1, False),  # an all-white mask: still counted, as published
            record("partial/sd15/real/3.jpg", 0, False),
            record("entire/sd15/fake/4.jpg", 1, False),
            record("000123.png", 1, True),
        ]
    )
    assert [r.partial for r in records] == [True, True, False, False, False]
    assert protocol.score_split("sd15", records).n_pixel == 2


def test_localization_falls_back_to_fakes_with_a_mask_where_keys_have_no_prefix():
    records = protocol.mark_partial_fakes(
        [record("Tp/a.jpg", 1, True), record("Tp/b.jpg", 1, False), record("Au/c.jpg", 0, False)]
    )
    assert [r.partial for r in records] == [True, False, False]


def test_mean_row_skips_missing_figures():
    rows = [
        protocol.SplitScores("a", {"pixel_f1": 0.5, "pixel_iou": 0.4, "image_f1": None}, 2, 4, 2, 2),
        protocol.SplitScores("b", {"pixel_f1": 0.3, "pixel_iou": 0.2, "image_f1": 0.8}, 3, 6, 3, 3),
    ]
    mean = protocol.mean_row(rows)
    assert mean.pixel_f1 == pytest.approx(0.4)
    assert mean.image_f1 == pytest.approx(0.8)
    assert mean.n_images == 10


def brier(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """A figure no Benco evaluator gives, per row of image weights: the mean squared error."""
    return (w @ (p - y) ** 2) / w.sum(axis=1)


def test_a_metric_is_one_entry_in_the_table_of_metrics(tmp_path, monkeypatch):
    """Appending one ``Metric`` (a Benco evaluator, or a compute function) puts it in the
    records, every row, the mean, the intervals, the printed table, the JSON, the CSV and (per
    image) the per-image CSV."""
    from imdlbenco_maskclip.evaluation import bootstrap

    rng = np.random.default_rng(1)
    truth = _write_mani(tmp_path / "mani", rng)
    masks = {n: rng.random((SIZE, SIZE)).astype(np.float32) for n in truth}
    labels = {n: float(rng.random()) for n in truth}
    extra = protocol.Metric("pixel_iou_again", "IoU again", "PixelIOU", protocol.PARTIAL_FAKES)
    computed = protocol.Metric("brier", "Brier", None, protocol.ALL_IMAGES, brier, higher_is_better=False)
    monkeypatch.setattr(protocol, "METRICS", (*protocol.METRICS, extra, computed))
    datasets = protocol_datasets([f"mine={tmp_path / 'mani'}"], DatasetOptions(SIZE), None)
    result = protocol.evaluate(CraftedModel(masks, labels), datasets, Runtime(torch.device("cpu")), 4)
    p = np.array([r.pred_label for r in result.records])
    assert result.rows[0].brier == pytest.approx(np.mean((p - [r.label for r in result.records]) ** 2))
    result = bootstrap.with_intervals(result, bootstrap.Settings(200, 0))
    assert result.rows[0].ci95["brier"][0] < result.rows[0].brier < result.rows[0].ci95["brier"][1]
    assert "Brier" in tables.result_table(result)
    assert result.rows[0].pixel_iou_again == pytest.approx(result.rows[0].pixel_iou)
    assert all(r.f1_by_threshold == () for r in result.records)  # curves only when asked for (the report's)
    assert result.mean.pixel_iou_again == pytest.approx(result.mean.pixel_iou)
    assert "IoU again" in tables.result_table(result)
    tables.write_results(result, tmp_path / "out", "Crafted", "none.pth", compare=False)
    saved = json.loads((tmp_path / "out" / "opensdi_results.json").read_text())
    assert saved["splits"][0]["pixel_iou_again"] == pytest.approx(saved["splits"][0]["pixel_iou"])
    assert saved["splits"][0]["ci95"]["brier"] == list(result.rows[0].ci95["brier"])
    with open(tmp_path / "out" / "opensdi_results.csv") as handle:
        assert {"pixel_iou_again", "brier", "brier_low", "brier_high"} <= set(next(csv.reader(handle)))
    with open(tmp_path / "out" / "per_image.csv") as handle:
        assert "pixel_iou_again" in next(csv.reader(handle))
    page = report.write_report(tmp_path / "out", result.records, [], {"model": "Crafted"}).read_text()
    assert "<th>IoU again</th>" in page and 'alt="Each metric per generator"' in page


class MeanColour(torch.nn.Module):
    """A mask from each pixel's mean colour and a fixed fake probability: enough for pixel AUC."""

    def forward(self, image: torch.Tensor, **kwargs) -> dict:
        return {"pred_mask": torch.sigmoid(image.mean(1, keepdim=True)), "pred_label": torch.full((len(image),), 0.7)}


def _png(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_tiny_edit_that_vanishes_at_64_px_is_counted_and_left_out_of_pixel_auc(tmp_path):
    """A 3x3 px edit of a 512 px photo has no pixel left in its mask at 64 px: Benco's PixelAUC
    would score it 0; the protocol counts it in n_empty_mask and averages pixel AUC without it."""
    from dataset_adapters.synthetic import write_opensdi_shard

    rng = np.random.default_rng(0)
    photo = lambda: _png(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8))  # noqa: E731
    tiny, large = np.zeros((512, 512, 3), np.uint8), np.zeros((512, 512, 3), np.uint8)
    tiny[1:4, 1:4] = 255
    large[100:300, 150:400] = 255
    rows = [
        ("partial/sd15/fake/tiny.png", photo(), _png(tiny), 1),
        ("partial/sd15/fake/large.png", photo(), _png(large), 1),
        ("partial/sd15/real/a.png", photo(), None, 0),
        ("partial/sd15/real/b.png", photo(), None, 0),
    ]
    write_opensdi_shard(tmp_path / "data" / "data" / "sd15-00000-of-00001.parquet", rows)
    datasets = protocol_datasets([str(tmp_path / "data")], DatasetOptions(64), None)
    result = protocol.evaluate(MeanColour(), datasets, Runtime(torch.device("cpu")), 4, progress=False)

    by_name = {r.name.split("/")[-1]: r for r in result.records}
    assert by_name["tiny.png"].empty_mask and not by_name["large.png"].empty_mask
    assert by_name["tiny.png"].pixel["pixel_auc"] is None and by_name["tiny.png"].pixel["pixel_f1"] is not None
    row = result.rows[0]
    assert row.n_pixel == 2 and row.n_empty_mask == 1 and result.mean.n_empty_mask == 1
    assert row.pixel_auc == pytest.approx(by_name["large.png"].pixel["pixel_auc"])
    assert 0.0 < row.pixel_auc < 1.0  # Benco's 0 for the empty mask is not averaged in
    assert row.pixel_f1 == pytest.approx(np.mean([by_name[n].pixel["pixel_f1"] for n in ("tiny.png", "large.png")]))

    tables.write_results(result, tmp_path / "out", "MeanColour", "none.pth", compare=False)
    with open(tmp_path / "out" / "per_image.csv") as handle:
        lines = {line["name"].split("/")[-1]: line for line in csv.DictReader(handle)}
    assert (lines["tiny.png"]["empty_mask"], lines["tiny.png"]["pixel_auc"]) == ("1", "")
    assert lines["large.png"]["empty_mask"] == "0"
    markdown = (tmp_path / "out" / "opensdi_results.md").read_text()
    assert "1 partial fake(s) have an empty mask at the evaluated size (sd15 1)" in markdown
    assert json.loads((tmp_path / "out" / "opensdi_results.json").read_text())["splits"][0]["n_empty_mask"] == 1


def test_the_best_threshold_is_the_highest_mean_f1_ties_nearest_one_half():
    def fake(curve: list[float | None]) -> protocol.ImageRecord:
        return protocol.ImageRecord(
            "v", 0, "partial/v/fake/1.png", 1, True, True, None, {"pixel_f1": 0.0}, tuple(curve)
        )

    t = protocol.THRESHOLDS
    rising = [fake([i / 20 for i in range(19)]), fake([0.5] * 19)]
    assert protocol.best_threshold(rising) == t[-1]
    flat = [fake([0.3] * 19)]
    assert protocol.best_threshold(flat) == 0.5
    two_peaks = [fake([0.9 if x in (0.2, 0.45) else 0.1 for x in t])]
    assert protocol.best_threshold(two_peaks) == 0.45
    assert protocol.best_threshold([fake([])]) is None
