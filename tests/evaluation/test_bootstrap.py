"""The bootstrap's figures equal plain computations, its intervals are seeded and hold the
averages, and an independent script recomputes the figures and intervals from per_image.csv."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from imdlbenco_maskclip.evaluation import bootstrap, calibration, detection_figures, protocol, tables
from tests.support.crafted_records import crafted_result, lifted

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "support" / "recompute_per_image.py"
AVERAGES = ("pixel_f1", "pixel_iou", "pixel_auc", "pixel_acc", "image_acc", "real_fpr", "real_area")


def plain_ece(p: np.ndarray, y: np.ndarray) -> float:
    """The issue's words: 15 bins [k/15, (k+1)/15), the last closed; (n_bin / n) x |share of
    fakes - mean probability| summed."""
    total = 0.0
    for k in range(15):
        inside = (p >= k / 15) & ((p < (k + 1) / 15) if k < 14 else (p <= 1.0))
        if inside.any():
            total += inside.mean() * abs(y[inside].mean() - p[inside].mean())
    return total


@pytest.mark.parametrize("n", [1, 2, 7, 60, 301])
def test_figures_of_the_split_equal_plain_computations(n):
    rng = np.random.default_rng(n)
    p = rng.random(2 * n)
    p[:2] = 0.5  # ties and the 0.5 edge
    y = np.r_[np.zeros(n), np.ones(n)]
    ones = np.ones((1, 2 * n))
    assert detection_figures.tpr_at_fpr(p, y, ones)[0] == np.mean(p[n:] > np.percentile(p[:n], 95))
    assert detection_figures.percentile_of_reals(p, y, ones, 95)[0] == np.percentile(p[:n], 95)
    assert calibration.ece(p, y, ones)[0] == pytest.approx(plain_ece(p, y), abs=1e-12)
    assert detection_figures.auc(p, y, ones)[0] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert detection_figures.accuracy(p, y, ones)[0] == np.mean((p > 0.5) == y)
    for name in ("ImageF1", "ImageAccuracy"):  # what the table's figures are computed by
        import IMDLBenCo.evaluation

        evaluator = getattr(IMDLBenCo.evaluation, name)()
        evaluator.remain_update(torch.tensor(p, dtype=torch.float32), torch.tensor(y, dtype=torch.float32))
        ours = (detection_figures.f1 if name == "ImageF1" else detection_figures.accuracy)(p, y, ones)[0]
        assert ours == pytest.approx(float(evaluator.epoch_update()), abs=1e-6)


def test_weighted_rows_are_the_figures_of_the_redrawn_images():
    """Row b of the weights counts how often each image is drawn: the figure on that row is the
    figure of the sample with each image repeated that often."""
    rng = np.random.default_rng(3)
    p, y = rng.random(80), np.r_[np.zeros(35), np.ones(45)]
    weights = rng.integers(0, 4, size=(6, 80)).astype(float)
    for b, row in enumerate(weights):
        drawn = np.repeat(np.arange(80), row.astype(int))
        sample, labels, one = p[drawn], y[drawn], np.ones((1, len(drawn)))
        for figure in (detection_figures.auc, detection_figures.tpr_at_fpr, detection_figures.f1, calibration.ece):
            assert figure(p, y, weights)[b] == pytest.approx(figure(sample, labels, one)[0], abs=1e-12), figure


@pytest.fixture(scope="module")
def scored() -> protocol.ProtocolResult:
    return bootstrap.with_intervals(crafted_result({"sd15": 200, "flux": 150}, seed=0), bootstrap.Settings(1000, 0))


def test_every_figure_has_an_interval_and_averages_lie_inside(scored):
    for row in [*scored.rows, scored.mean]:
        for metric in protocol.METRICS:
            low, high = row.ci95[metric.name]
            assert low <= high, (row.split, metric.name)
            if metric.name in AVERAGES:
                assert low <= row.scores[metric.name] <= high, (row.split, metric.name)
    mean_width = scored.mean.ci95["pixel_f1"][1] - scored.mean.ci95["pixel_f1"][0]
    assert mean_width < min(r.ci95["pixel_f1"][1] - r.ci95["pixel_f1"][0] for r in scored.rows)


def test_intervals_are_seeded_and_split_by_split():
    result = crafted_result({"sd15": 40, "flux": 40}, seed=1)
    first = bootstrap.with_intervals(result, bootstrap.Settings(300, 7))
    again = bootstrap.with_intervals(result, bootstrap.Settings(300, 7))
    other = bootstrap.with_intervals(result, bootstrap.Settings(300, 8))
    assert [r.ci95 for r in first.rows] == [r.ci95 for r in again.rows]
    assert first.rows[0].ci95 != other.rows[0].ci95
    reordered = protocol.ProtocolResult(result.rows[::-1], result.mean, result.records)
    flipped = bootstrap.with_intervals(reordered, bootstrap.Settings(300, 7))  # a split's draws follow its name
    assert flipped.rows[1].ci95 == first.rows[0].ci95 and flipped.rows[0].ci95 == first.rows[1].ci95
    assert bootstrap.with_intervals(result, bootstrap.Settings(0, 7)) is result


def test_an_independent_script_recomputes_figures_and_intervals_from_per_image_csv(scored, tmp_path):
    tables.write_results(scored, tmp_path, "Crafted", "none.pth", compare=False, bootstrap=bootstrap.Settings(1000, 0))
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "per_image.csv"), "--resamples", "1000", "--seed", "5"],
        capture_output=True,
        text=True,
        check=True,
    )
    theirs = json.loads(done.stdout)
    ours = json.loads((tmp_path / "opensdi_results.json").read_text())
    assert ours["bootstrap"] == {"resamples": 1000, "seed": 0, "level": 95}
    for row in [*ours["splits"], ours["mean"]]:
        other = theirs[row["split"]]
        for name in ("real_fpr", "tpr_at_fpr5", "ece"):  # exactly the definitions
            assert row[name] == pytest.approx(other[name], abs=1e-12), (row["split"], name)
        for name in ("real_area", "image_auc", "image_acc", *(m.name for m in protocol.pixel_metrics())):
            assert row[name] == pytest.approx(other[name], abs=1e-9), (row["split"], name)
        for name, (low, high) in row["ci95"].items():
            their_low, their_high = other["ci95"][name]
            noise = 0.15 * (high - low) + 0.005  # two independent bootstraps of 1000 resamples
            assert abs(low - their_low) <= noise and abs(high - their_high) <= noise, (row["split"], name)


def _paired(reference: protocol.ProtocolResult, other: protocol.ProtocolResult) -> list[bootstrap.Difference]:
    splits = [r.split for r in reference.rows]
    pairs = {
        s: ([r for r in reference.records if r.split == s], [r for r in other.records if r.split == s]) for s in splits
    }
    return bootstrap.paired_differences(pairs, protocol.METRICS, bootstrap.Settings(500, 0))


def test_a_run_paired_with_itself_differs_by_zero_with_interval_zero(scored):
    differences = _paired(scored, scored)
    assert {d.split for d in differences} == {"sd15", "flux", "mean"}
    assert all(d.difference == 0.0 and d.ci95 == (0.0, 0.0) and not d.excludes_zero for d in differences)


def test_paired_differences_are_the_figures_differences(scored):
    better = lifted({"sd15": 200, "flux": 150}, seed=0, by=0.1)
    found = {(d.split, d.metric): d for d in _paired(scored, better)}
    for row, raised in zip([*scored.rows, scored.mean], [*better.rows, better.mean]):
        d = found[(row.split, "pixel_f1")]
        assert d.difference == pytest.approx(raised.pixel_f1 - row.pixel_f1, abs=1e-9)
        assert d.difference == pytest.approx(0.1, abs=1e-9) and d.ci95 == pytest.approx((0.1, 0.1), abs=1e-9)
        assert d.excludes_zero
        assert found[(row.split, "image_auc")].difference == 0.0
    assert found[("sd15", "pixel_f1")].n == scored.rows[0].n_pixel
    assert found[("sd15", "real_fpr")].n == scored.rows[0].n_real
    assert found[("mean", "image_acc")].n == scored.mean.n_images
