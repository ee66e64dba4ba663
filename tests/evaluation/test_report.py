"""``opensdi_report.html`` as written by ``benco test``, read back in a real headless Chromium."""

from __future__ import annotations

import csv
import json
import math
import shutil

import pytest

from imdlbenco_maskclip.cli import benco
from imdlbenco_maskclip.common.errors import UserError
from imdlbenco_maskclip.evaluation import leaderboard, protocol, report, tables
from tests.conftest import TINY_IMAGE_SIZE
from tests.support.report_browser import read_report


@pytest.fixture(scope="module")
def tested(tiny_checkpoint, opensdi_root, tmp_path_factory):
    """``benco test --compare-paper --perturb`` of the tiny checkpoint on (a copy of) the synthetic
    shards, after ``benco opensdi audit`` of them has left its audit beside them."""
    output = tmp_path_factory.mktemp("report")
    data = output / "data"
    shutil.copytree(opensdi_root, data)
    assert benco.main(["opensdi", "audit", str(data)]) == 0
    assert (
        benco.main(
            [
                "test",
                "--checkpoint",
                str(tiny_checkpoint),
                "--test_data_path",
                str(data),
                "--image_size",
                str(TINY_IMAGE_SIZE),
                "--test_batch_size",
                "8",
                "--num_workers",
                "0",
                "--device",
                "cpu",
                "--compare-paper",
                "--output_dir",
                str(output),
                "--perturb",
                "jpeg:50",
                "blur:3,7",
            ]
        )
        == 0
    )
    return output


@pytest.fixture(scope="module")
def shown(tested):
    return read_report(tested / "opensdi_report.html")


def close(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (
        a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    )


@pytest.mark.slow  # a browser
def test_report_is_self_contained_and_every_picture_loads(shown):
    assert all(url.startswith(("file:", "data:")) for url in shown["requests"]), shown["requests"]
    assert shown["images"] and all(
        image["width"] > 0 and image["src"].startswith("data:image/") for image in shown["images"]
    )
    assert {"bars", "roc", "real-images", "reliability", "thresholds", "perturbations", "audit-figure"} <= set(
        shown["figures"]
    )


def test_report_table_matches_the_json(tested, shown):
    results = json.loads((tested / "opensdi_results.json").read_text())
    keys = [key for key, _ in tables.columns()]
    rows = shown["tables"]["results"]
    assert [row[0] for row in rows] == [*(s["split"] for s in results["splits"]), "mean"]
    for row, expected in zip(rows, [*results["splits"], results["mean"]]):
        for key, value in zip(keys[1:], row[1:]):
            assert close(value if value != "-" else None, expected[key]), (expected["split"], key)


def test_report_shows_every_figure_with_the_jsons_interval(tested, shown):
    results = json.loads((tested / "opensdi_results.json").read_text())
    keys = [key for key, _ in tables.columns()]
    averages = {"pixel_f1", "pixel_iou", "pixel_auc", "pixel_acc", "image_acc", "real_fpr", "real_area"}
    for row, cells, expected in zip(
        shown["tables"]["results"], shown["intervals"]["results"], [*results["splits"], results["mean"]]
    ):
        for key, value, bounds in zip(keys[1:], row[1:], cells[1:]):
            if key.startswith("n_"):
                assert bounds is None, key
                continue
            assert bounds == expected["ci95"][key], (expected["split"], key)
            if key in averages:
                assert bounds[0] <= value <= bounds[1], (expected["split"], key)
    assert "In brackets: 95% percentile-bootstrap intervals (1000 resamples, seed 0)" in shown["text"]


def test_report_draws_the_reliability_of_the_fake_probability(tested, shown):
    """The reliability table beside the diagram holds, per generator, the non-empty bins of
    [k/15, (k+1)/15) with their images, mean probability and share of fakes, as per_image.csv says."""
    with open(tested / "per_image.csv", newline="") as handle:
        lines = list(csv.DictReader(handle))
    expected = []
    for split in dict.fromkeys(line["split"] for line in lines):
        p = [float(line["pred_label"]) for line in lines if line["split"] == split]
        y = [int(line["label"]) for line in lines if line["split"] == split]
        for k in range(15):
            inside = [i for i, v in enumerate(p) if k / 15 <= v < (k + 1) / 15 or (k == 14 and v == 1.0)]
            if inside:
                share = sum(y[i] for i in inside) / len(inside)
                mean = sum(p[i] for i in inside) / len(inside)
                expected.append([split, f"{k / 15:.3f}-{(k + 1) / 15:.3f}", len(inside), mean, share])
    rows = shown["tables"]["reliability-table"]
    assert [row[:3] for row in rows] == [row[:3] for row in expected]
    for row, wanted in zip(rows, expected):
        assert row[3:] == pytest.approx(wanted[3:], abs=1e-12)
    assert any(image["alt"] == "reliability diagram per generator" and image["width"] > 0 for image in shown["images"])


def test_results_record_the_files_each_split_was_scored_on(tested):
    from dataset_adapters.fingerprint import shard_fingerprint

    results = json.loads((tested / "opensdi_results.json").read_text())
    assert list(results["fingerprints"]) == [s["split"] for s in results["splits"]]
    for split, recorded in results["fingerprints"].items():
        shards = sorted(str(p) for p in (tested / "data" / "data").glob(f"{split}-*.parquet"))
        assert recorded == shard_fingerprint(shards) and len(recorded["files"]) == len(shards)


def test_report_states_the_run(tested, shown, tiny_checkpoint):
    facts = shown["facts"]
    assert facts["model"] == "MaskCLIP" and facts["checkpoint"] == str(tiny_checkpoint)
    assert facts["selected on"] == "not recorded in the checkpoint" and "setting=tiny" in facts["model options"]
    results = json.loads((tested / "opensdi_results.json").read_text())
    assert facts["images"].startswith(f"{results['mean']['n_images']} ({results['mean']['n_real']} real")
    assert facts["generators"] == ", ".join(s["split"] for s in results["splits"])
    assert (
        facts["device"] == "cpu" and facts["date"].endswith(" UTC") and facts["versions"].startswith("imdlbenco 0.1.")
    )
    assert facts["precision"] == results["precision"] == "float32"  # benco test's default: --amp off


def test_amp_auto_is_an_opt_in_that_the_results_record(tiny_checkpoint, opensdi_root, tmp_path, monkeypatch):
    """``--amp auto`` follows the inference rule: bf16 on a CPU that computes it natively."""
    from imdlbenco_maskclip.common import precision

    monkeypatch.setattr(precision, "cpu_computes_bf16", lambda: True)
    arguments = ["test", "--checkpoint", str(tiny_checkpoint), "--test_data_path", str(opensdi_root)]
    arguments += ["--generators", "sd15", "--image_size", str(TINY_IMAGE_SIZE), "--num_workers", "0"]
    assert benco.main([*arguments, "--device", "cpu", "--amp", "auto", "--output_dir", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "opensdi_results.json").read_text())["precision"] == "bfloat16"
    assert "Precision: bfloat16" in (tmp_path / "opensdi_results.md").read_text()
    assert "bfloat16 (autocast)" in (tmp_path / "opensdi_report.html").read_text()


def test_report_shows_the_papers_rows(shown):
    paper = {row[0]: row[1:] for row in shown["tables"]["paper"]}
    board = leaderboard.leaderboard()
    first = next(m for m in protocol.METRICS if m.paper is not None)
    assert paper["MaskCLIP (paper)"][0] == board[first.paper[0]]["rows"]["MaskCLIP"]["sd15"][first.paper[1]]
    assert len(paper) == 1 + len(leaderboard.paper_rows())


def test_examples_are_the_best_and_worst_partial_fakes(tested, shown):
    """Per generator the highest and lowest pixel F1 of per_image.csv, best first, worst first."""
    with open(tested / "per_image.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["partial_fake"] == "1" and r["pixel_f1"]]
    for split in dict.fromkeys(r["split"] for r in rows):
        scores = sorted((float(r["pixel_f1"]) for r in rows if r["split"] == split), reverse=True)
        best, worst = shown["examples"][f"examples-{split}-best"], shown["examples"][f"examples-{split}-worst"]
        n_best = min(report.EXAMPLES_PER_SIDE, (len(scores) + 1) // 2)
        assert best == pytest.approx(scores[:n_best])
        assert worst == pytest.approx(scores[n_best:][-report.EXAMPLES_PER_SIDE :][::-1])
    assert sum(1 for image in shown["images"] if image["alt"] == "overlay") == sum(
        len(v) for v in shown["examples"].values()
    )


def test_threshold_curve_passes_through_the_tables_pixel_f1(tested, shown):
    results = json.loads((tested / "opensdi_results.json").read_text())
    at_half = {row[0]: row[1] for row in shown["tables"]["best-thresholds"]}
    for split in results["splits"]:
        assert at_half[split["split"]] == pytest.approx(split["pixel_f1"], abs=1e-9)
    for split, _, threshold, best in shown["tables"]["best-thresholds"]:
        assert threshold in protocol.THRESHOLDS and best >= at_half[split] - 1e-12


def test_choose_examples_ranks_by_pixel_f1_and_keeps_sides_apart():
    def fake(i: int, f1: float | None) -> protocol.ImageRecord:
        return protocol.ImageRecord("sd15", i, f"partial/sd15/fake/{i}.png", 1, True, True, 0.9, {"pixel_f1": f1})

    records = [fake(i, f1) for i, f1 in enumerate([0.3, 0.9, None, 0.1, 0.5])]
    records.append(protocol.ImageRecord("sd15", 9, "partial/sd15/real/9.png", 0, False, False, 0.1, {}))
    chosen = report.choose_examples(records, per_side=4)["sd15"]
    assert [r.index for r in chosen["best"]] == [1, 4]
    assert [r.index for r in chosen["worst"]] == [3, 0]


def test_report_robustness_table_matches_the_json(tested, shown):
    perturbations = json.loads((tested / "opensdi_results.json").read_text())["perturbations"]
    rows = {row[0]: row[1:] for row in shown["tables"]["perturbation-table"]}
    assert list(rows) == ["none", "jpeg:50", "blur:3", "blur:7"] and list(perturbations) == list(rows)[1:]
    perturbations["none"] = {"mean": json.loads((tested / "opensdi_results.json").read_text())["mean"]}
    shown_metrics = [m for m in protocol.METRICS if any(p["mean"][m.name] is not None for p in perturbations.values())]
    for key, level in perturbations.items():
        for metric, value in zip(shown_metrics, rows[key]):
            assert close(value if value != "-" else None, level["mean"][metric.name]), (key, metric.name)


def test_report_shows_the_audit(tested, shown):
    audit = json.loads((tested / "data" / "audit.json").read_text())
    rows = {row[0]: row[1:] for row in shown["tables"]["audit"]}
    assert list(rows) == list(audit["generators"])
    for generator, entry in audit["generators"].items():
        assert rows[generator] == [
            entry["counts"]["real"],
            entry["counts"]["fake"],
            entry["majority"],
            entry["accuracy"],
            entry["accuracy_std"],
        ]


def test_an_audit_beside_the_data_is_found(tested, tmp_path):
    data = tmp_path / "OpenSDI_test"
    (data / "data").mkdir(parents=True)
    (data / "audit.json").write_text((tested / "data" / "audit.json").read_text())
    assert report.find_audit([f"test={data}"], None) == data / "audit.json"
    assert report.find_audit([str(data / "data" / "sd15-00000-of-00001.parquet")], None) is None


def test_audit_flag_takes_the_file_or_its_folder(tested):
    audit = tested / "data" / "audit.json"
    assert report.find_audit([], str(audit.parent)) == audit == report.find_audit([], str(audit))


def test_audit_flag_names_a_missing_file(tmp_path):
    with pytest.raises(UserError, match="--audit: no audit.json"):
        report.find_audit([], str(tmp_path))
