"""``benco demo`` with the shipped config: training lowers the loss and lifts pixel F1."""

from __future__ import annotations

import json

import pytest

from imdlbenco_maskclip.cli import benco
from tests.support.report_browser import read_report

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
