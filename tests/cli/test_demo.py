"""``benco demo`` with the shipped config: training lowers the loss and lifts pixel F1, and
every figure of its table comes with an interval that an independent script reproduces."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imdlbenco_maskclip.cli import benco
from imdlbenco_maskclip.evaluation import comparison, protocol, tables
from tests.support.report_browser import read_report

SCRIPT = Path(__file__).resolve().parents[2] / "tests" / "support" / "recompute_per_image.py"
AVERAGES = ("pixel_f1", "pixel_iou", "pixel_auc", "pixel_acc", "image_acc", "real_fpr", "real_area")

pytestmark = pytest.mark.slow  # the whole demo: about 70 s


def test_demo_learns_on_the_embedded_sample(tmp_path, capsys):
    output = tmp_path / "demo"
    assert benco.main(["demo", "--output_dir", str(output)]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "Mean pixel F1 on held-out partial fakes: untrained" in printed
    assert captured.out.count("\n") + captured.err.count("\n") < 60  # both tables and where the files are
    assert f"Full log: {output / 'demo_log.txt'}" in printed and "Epoch: [" not in printed  # Benco's per-step log

    log = [json.loads(line) for line in (output / "run" / "log.txt").read_text().splitlines()]
    assert len(log) == 16
    assert log[-1]["train_total"] < 0.7 * log[0]["train_total"]

    results = json.loads((output / "results" / "opensdi_results.json").read_text())
    assert [s["split"] for s in results["splits"]] == ["sd15", "sd2", "sdxl", "sd3", "flux"]
    trained = results["mean"]["pixel_f1"]
    summary = next(line for line in printed.splitlines() if line.startswith("Mean pixel F1 on held-out partial fakes"))
    untrained = float(summary.split("untrained ")[1].split(" ->")[0])
    assert trained > untrained + 0.15
    assert results["splits"][0]["pixel_f1"] > results["splits"][-1]["pixel_f1"]  # sd15 transfers best to itself
    assert (output / "pictures" / "held_out_partial_fakes.png").stat().st_size > 10_000
    assert results["mean"]["image_acc"] > 0.6  # the untrained detection head says 0.5

    shown = read_report(output / "results" / "opensdi_report.html")  # the trained model's report, in Chromium
    assert f"Report (open in a browser): {output / 'results' / 'opensdi_report.html'}" in printed
    mean = shown["tables"]["results"][-1]
    assert mean[0] == "mean" and mean[1] == results["mean"]["pixel_f1"]
    assert {"bars", "roc", "thresholds"} <= set(shown["figures"]) and all(i["width"] > 0 for i in shown["images"])
    assert len(shown["examples"]) == 2 * len(results["splits"])  # best and worst partial fakes of each generator

    check_intervals(output / "results", shown, tmp_path / "again")


def check_intervals(results_dir: Path, shown: dict, copy: Path) -> None:
    """Every figure of the clean table has its interval in the JSON, the Markdown, the CSV and
    the report, averages lie inside theirs, an independent script recomputes the new figures
    exactly and the intervals within bootstrap noise, and the run paired with itself differs
    by zero."""
    results = json.loads((results_dir / "opensdi_results.json").read_text())
    rows = [*results["splits"], results["mean"]]
    for row in rows:
        for metric in protocol.METRICS:
            low, high = row["ci95"][metric.name]
            if metric.name in AVERAGES:
                assert low <= row[metric.name] <= high, (row["split"], metric.name)
    markdown = (results_dir / "opensdi_results.md").read_text()
    assert f"| mean  | {results['mean']['pixel_f1']:.3f} [{results['mean']['ci95']['pixel_f1'][0]:.3f}, " in markdown
    with open(results_dir / "opensdi_results.csv", newline="") as handle:
        lines = list(csv.DictReader(handle))
    for line, row in zip(lines, rows):
        for metric in protocol.METRICS:
            assert [float(line[f"{metric.name}_low"]), float(line[f"{metric.name}_high"])] == row["ci95"][metric.name]
    keys = [key for key, _ in tables.columns()]
    for cells, row in zip(shown["intervals"]["results"], rows):
        assert dict(zip(keys, cells)) == {k: row["ci95"].get(k) for k in keys}
    assert "reliability" in shown["figures"] and "real-images" in shown["figures"]

    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(results_dir / "per_image.csv"), "--resamples", "2000"],
        capture_output=True,
        text=True,
        check=True,
    )
    theirs = json.loads(done.stdout)
    for row in rows:
        other = theirs[row["split"]]
        for name in ("real_fpr", "tpr_at_fpr5", "ece"):
            assert row[name] == pytest.approx(other[name], abs=1e-12), (row["split"], name)
        assert row["real_area"] == pytest.approx(other["real_area"], abs=1e-9)
        for name, (low, high) in row["ci95"].items():
            noise = 0.2 * (high - low) + 0.02  # two bootstraps of about 30 images per class
            assert abs(low - other["ci95"][name][0]) <= noise, (row["split"], name)
            assert abs(high - other["ci95"][name][1]) <= noise, (row["split"], name)

    shutil.copytree(results_dir, copy)
    itself = comparison.as_json(comparison.compare([results_dir, copy]))
    assert len(itself["paired"]) == (len(rows)) * len(protocol.METRICS)
    assert all(e["difference"] == 0.0 and e["ci95"] == [0.0, 0.0] for e in itself["paired"])
