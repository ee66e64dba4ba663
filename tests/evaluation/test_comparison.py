"""``benco compare`` on result files written by ``tables.write_results`` from known scores:
every output repeats the inputs exactly, mismatched runs are flagged and left out of the mean,
``--compare-paper`` adds the leaderboard's figures, and the HTML page shows in a real browser."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from statistics import fmean
from types import SimpleNamespace

import numpy as np
import pytest

from imdlbenco_maskclip.cli import benco
from imdlbenco_maskclip.common.errors import UserError
from imdlbenco_maskclip.evaluation import comparison, leaderboard, protocol, tables
from tests.support import crafted_records

COUNTS = (50, 100, 40, 60)  # n_pixel, n_images, n_real, n_fake
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def write_run(folder: Path, model: str, splits: dict[str, tuple[int, ...]], seed: int) -> dict:
    """``benco test``'s files for ``model`` with random known scores on ``splits`` (name ->
    counts); returns the rows by split and the stored mean, as the JSON holds them."""
    rng = np.random.default_rng(seed)
    rows = [
        protocol.SplitScores(s, {m.name: float(rng.random()) for m in protocol.METRICS}, *counts)
        for s, counts in splits.items()
    ]
    result = protocol.ProtocolResult(rows, protocol.mean_row(rows), [])
    tables.write_results(
        result, folder, model, str(folder / "checkpoint-best.pth"), compare=False, selected_on="sd15 val"
    )
    return {
        "splits": {r.split: {k: v for k, v in r.as_dict().items() if k != "split"} for r in rows},
        "mean": result.mean.as_dict(),
    }


def run_compare(*argv: str) -> SimpleNamespace:
    """``benco compare`` through the CLI; its exit code, printed output and ``comparison.json``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = benco.main(["compare", *argv])
    folder = Path(argv[argv.index("--output_dir") + 1]) if "--output_dir" in argv else None
    saved = json.loads((folder / "comparison.json").read_text()) if folder and code == 0 else None
    return SimpleNamespace(code=code, out=out.getvalue(), err=err.getvalue(), folder=folder, json=saved)


def metric_names() -> list[str]:
    return [m.name for m in protocol.METRICS]


def markdown_rows(text: str, title: str) -> dict[str, list[str]]:
    """The cells of the Markdown table under ``## title``, by row label."""
    section = text.split(f"## {title}\n\n", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in section]
    return {row[0]: row[1:] for row in cells}


def formatted(values: list) -> list[str]:
    return ["-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v) for v in values]


class PageReader(HTMLParser):
    """The image sources of a page and each table's body cells as (text, data-value), by id."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.images: list[str] = []
        self.tables: dict[str, list[list[tuple[str, str | None]]]] = {}
        self._rows: list | None = None
        self._cell: list | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        elif tag == "table":
            self._rows = self.tables.setdefault(attrs.get("id", ""), [])
        elif tag == "tr" and self._rows is not None:
            self._rows.append([])
        elif tag == "td":
            self._cell = ["", attrs.get("data-value")]

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[0] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._rows[-1].append(tuple(self._cell))
            self._cell = None
        elif tag == "table":
            self._rows = None


def expected_metric_rows(saved: dict, metric: str) -> dict[str, list]:
    """Each run's figures per split then its mean, from ``comparison.json``."""
    return {
        run["label"]: [*(run["splits"].get(s, {}).get(metric) for s in saved["splits"]), run["mean"][metric]]
        for run in saved["runs"]
    }


def assert_cells_equal(cells: list[str | None], values: list) -> None:
    """``data-value`` cells against the exact numbers: absent where the value is missing."""
    assert [None if c is None else float(c) for c in cells] == values


@pytest.fixture(scope="module")
def mismatched(tmp_path_factory):
    """MaskCLIP on sd15, sd2 and flux beside IML_ViT on sd15 and sd2, whose sd2 has other counts."""
    root = tmp_path_factory.mktemp("mismatched")
    inputs = {
        "MaskCLIP": write_run(root / "maskclip", "MaskCLIP", {"sd15": COUNTS, "sd2": COUNTS, "flux": COUNTS}, seed=1),
        "IML_ViT": write_run(root / "iml_vit", "IML_ViT", {"sd15": COUNTS, "sd2": (45, 90, 36, 54)}, seed=2),
    }
    result = run_compare(str(root / "maskclip"), str(root / "iml_vit"), "--output_dir", str(root / "out"))
    assert result.code == 0, result.err
    result.inputs = inputs
    return result


def test_every_output_repeats_the_inputs(tmp_path):
    inputs = {
        "MaskCLIP": write_run(tmp_path / "maskclip", "MaskCLIP", dict.fromkeys(("sd15", "sd2", "sd3"), COUNTS), seed=3),
        "IML_ViT": write_run(tmp_path / "iml_vit", "IML_ViT", dict.fromkeys(("sd15", "sd2", "sd3"), COUNTS), seed=4),
    }
    result = run_compare(
        str(tmp_path / "maskclip"),
        str(tmp_path / "iml_vit" / "opensdi_results.json"),
        "--output_dir",
        str(tmp_path / "out"),
    )
    assert result.code == 0 and "warning" not in result.err.lower()
    assert sorted(p.name for p in result.folder.iterdir()) == [f"comparison.{e}" for e in ("csv", "html", "json", "md")]

    saved = result.json
    assert [r["label"] for r in saved["runs"]] == ["MaskCLIP", "IML_ViT"]
    assert saved["splits"] == saved["mean_over"] == ["sd15", "sd2", "sd3"] and saved["mismatches"] == []
    for run in saved["runs"]:
        assert run["splits"] == inputs[run["label"]]["splits"]
        assert run["selected_on"] == "sd15 val" and run["checkpoint"].endswith("checkpoint-best.pth")
        stored_mean = inputs[run["label"]]["mean"]
        for key, value in run["mean"].items():  # every split is common: benco test's own mean
            assert value == pytest.approx(stored_mean[key]), key

    with open(result.folder / "comparison.csv", newline="") as handle:
        lines = list(csv.DictReader(handle))
    for line in lines:
        run = next(r for r in saved["runs"] if r["label"] == line["run"])
        row = run["mean"] if line["split"] == "mean" else run["splits"][line["split"]]
        assert line["in_mean"] == ("" if line["split"] == "mean" else "1")
        assert {k: float(line[k]) for k in row} == row

    markdown = (result.folder / "comparison.md").read_text()
    for metric in protocol.METRICS:
        for text in (markdown, result.out):
            table = markdown_rows(text, metric.title)
            assert table == {
                label: formatted(values) for label, values in expected_metric_rows(saved, metric.name).items()
            }
    assert "| mean " in markdown and "mean of common splits" not in markdown


def test_a_generator_one_run_lacks_is_flagged_and_left_out_of_the_mean(mismatched):
    saved = mismatched.json
    assert saved["splits"] == ["sd15", "sd2", "flux"] and saved["mean_over"] == ["sd15", "sd2"]
    missing = [m for m in saved["mismatches"] if m["kind"] == "split"]
    assert missing == [
        {
            "kind": "split",
            "split": "flux",
            "values": {"MaskCLIP": True, "IML_ViT": False},
            "message": missing[0]["message"],
        }
    ]
    ours = next(r for r in saved["runs"] if r["label"] == "MaskCLIP")
    assert ours["splits"]["flux"] == mismatched.inputs["MaskCLIP"]["splits"]["flux"]
    for name in metric_names():
        common = [mismatched.inputs["MaskCLIP"]["splits"][s][name] for s in ("sd15", "sd2")]
        assert ours["mean"][name] == pytest.approx(fmean(common))
        assert ours["mean"][name] != pytest.approx(mismatched.inputs["MaskCLIP"]["mean"][name])
    assert ours["mean"]["n_images"] == 2 * COUNTS[1]

    assert "benco compare: warning: split 'flux' was tested by MaskCLIP only, not by IML_ViT" in mismatched.err
    markdown = (mismatched.folder / "comparison.md").read_text()
    page = (mismatched.folder / "comparison.html").read_text()
    assert "**Warning:** split 'flux' was tested by MaskCLIP only" in markdown
    assert 'class="warning"' in page and "split &#x27;flux&#x27; was tested by MaskCLIP only" in page
    for text in (markdown, mismatched.out, page):
        assert "left out because not every run tested them: flux" in text and "mean of common splits" in text
    assert markdown_rows(markdown, "pixel F1")["IML_ViT"][2] == "-"
    with open(mismatched.folder / "comparison.csv", newline="") as handle:
        in_mean = {(line["run"], line["split"]): line["in_mean"] for line in csv.DictReader(handle)}
    assert in_mean[("MaskCLIP", "flux")] == "0" and in_mean[("MaskCLIP", "sd2")] == "1"


def test_different_image_counts_are_flagged(mismatched):
    counts = [m for m in mismatched.json["mismatches"] if m["kind"] == "counts"]
    assert len(counts) == 1 and counts[0]["split"] == "sd2"
    assert counts[0]["values"] == {
        "n_pixel": {"MaskCLIP": 50, "IML_ViT": 45},
        "n_images": {"MaskCLIP": 100, "IML_ViT": 90},
        "n_real": {"MaskCLIP": 40, "IML_ViT": 36},
        "n_fake": {"MaskCLIP": 60, "IML_ViT": 54},
    }
    message = "split 'sd2': the runs did not score the same images"
    assert f"benco compare: warning: {message}" in mismatched.err
    assert f"**Warning:** {message}" in (mismatched.folder / "comparison.md").read_text()
    assert message.replace("'", "&#x27;") in (mismatched.folder / "comparison.html").read_text()
    assert mismatched.json["mean_over"] == ["sd15", "sd2"]  # the same generators, only flagged


def test_compare_paper_adds_the_leaderboards_figures(tmp_path):
    board = json.loads(leaderboard.LEADERBOARD.read_text())
    generators = board["generators"]
    write_run(tmp_path / "maskclip", "MaskCLIP", dict.fromkeys(generators, COUNTS), seed=5)
    result = run_compare(str(tmp_path / "maskclip"), "--output_dir", str(tmp_path / "out"), "--compare-paper")
    assert result.code == 0, result.err
    paper = {row["name"]: row for row in result.json["paper"]["rows"]}
    assert paper["MaskCLIP"]["same_model"] and not paper["IML-ViT"]["same_model"]
    for split in [*generators, "mean"]:  # every generator tested: the paper's own mean
        assert paper["MaskCLIP"]["values"]["pixel_f1"][split] == board["localization"]["rows"]["MaskCLIP"][split]["f1"]
        assert paper["MaskCLIP"]["values"]["image_acc"][split] == board["detection"]["rows"]["MaskCLIP"][split]["acc"]
    assert "pixel_f1" not in paper["NPR"]["values"] and "image_acc" in paper["NPR"]["values"]
    for metric in protocol.METRICS:
        for name, row in paper.items():
            assert row["values"].get(metric.name, {}).get("sd15") == leaderboard.paper_value(name, "sd15", metric)
    markdown = (result.folder / "comparison.md").read_text()
    f1 = markdown_rows(markdown, "pixel F1")
    assert f1["MaskCLIP (paper)"] == formatted(
        [board["localization"]["rows"]["MaskCLIP"][s]["f1"] for s in [*generators, "mean"]]
    )
    assert "NPR (paper)" in markdown_rows(markdown, "image acc") and "NPR (paper)" not in f1
    assert board["source"] in markdown and "MaskCLIP (paper)" in result.out

    write_run(tmp_path / "two", "MaskCLIP", dict.fromkeys(("sd15", "sd2"), COUNTS), seed=6)
    partial = comparison.compare([tmp_path / "two"], with_paper=True)
    row = next(p for p in partial.paper if p.name == "MaskCLIP")
    assert set(row.values["pixel_f1"]) == {"sd15", "sd2", "mean"}
    assert row.values["pixel_f1"]["mean"] == pytest.approx(fmean(row.values["pixel_f1"][s] for s in ("sd15", "sd2")))


def test_runs_of_one_model_are_told_apart_by_their_folders(tmp_path):
    splits = {"sd15": COUNTS}
    for folder in ("x/run1", "y/run1", "z/run2"):
        write_run(tmp_path / folder, "MaskCLIP", splits, seed=7)
    write_run(tmp_path / "w", "IML_ViT", splits, seed=8)
    result = comparison.compare(
        [tmp_path / "x/run1", tmp_path / "y/run1", tmp_path / "z/run2/opensdi_results.json", tmp_path / "w"]
    )
    assert [r.label for r in result.runs] == ["MaskCLIP (x/run1)", "MaskCLIP (y/run1)", "MaskCLIP (z/run2)", "IML_ViT"]


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        ("{not json", "not valid JSON"),
        ('{"model": "MaskCLIP"}', "no 'splits' list"),
        (
            '{"model": "MaskCLIP", "splits": [{"split": "sd15", "pixel_f1": "high"}]}',
            "split 'sd15': 'pixel_f1' must be a number",
        ),
        ('{"model": "MaskCLIP", "splits": [{"split": "sd15"}, {"split": "sd15"}]}', "split 'sd15' appears twice"),
    ],
)
def test_bad_results_are_refused_naming_the_file(tmp_path, content, message):
    run = tmp_path / "run"
    run.mkdir()
    if content is not None:
        (run / "opensdi_results.json").write_text(content)
    result = run_compare(str(run), "--output_dir", str(tmp_path / "out"))
    assert result.code == 2 and "Traceback" not in result.err
    assert str(run / "opensdi_results.json") in result.err and message in result.err
    assert not (tmp_path / "out").exists()


def test_the_same_run_given_twice_is_refused(tmp_path):
    write_run(tmp_path / "run", "MaskCLIP", {"sd15": COUNTS}, seed=9)
    with pytest.raises(UserError, match="given twice"):
        comparison.compare([tmp_path / "run", tmp_path / "run" / "opensdi_results.json"])


def test_the_page_embeds_one_chart_per_metric_and_tables_equal_to_the_json(mismatched):
    text = (mismatched.folder / "comparison.html").read_text()
    page = PageReader(text)
    assert len(page.images) == len(protocol.METRICS)
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    assert all(f'id="chart-{name}"' in text for name in metric_names())
    assert "http://" not in text and "https://" not in text
    for name in metric_names():
        rows = {cells[0][0]: cells[1:] for cells in page.tables[f"table-{name}"] if cells}
        expected = expected_metric_rows(mismatched.json, name)
        assert set(rows) == set(expected)
        for label, values in expected.items():
            assert_cells_equal([value for _, value in rows[label]], values)
            assert [shown for shown, _ in rows[label]] == formatted(values)


def test_a_new_metric_is_one_entry_in_the_table_of_metrics(tmp_path, monkeypatch):
    extra = protocol.Metric("pixel_iou_again", "IoU again", "PixelIOU", protocol.PARTIAL_FAKES)
    monkeypatch.setattr(protocol, "METRICS", (*protocol.METRICS, extra))
    inputs = write_run(tmp_path / "run", "MaskCLIP", {"sd15": COUNTS}, seed=10)
    result = comparison.compare([tmp_path / "run"])
    comparison.write(result, tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert saved["runs"][0]["splits"]["sd15"]["pixel_iou_again"] == inputs["splits"]["sd15"]["pixel_iou_again"]
    assert "## IoU again" in (tmp_path / "out" / "comparison.md").read_text()
    with open(tmp_path / "out" / "comparison.csv", newline="") as handle:
        assert "pixel_iou_again" in next(csv.reader(handle))
    page = PageReader((tmp_path / "out" / "comparison.html").read_text())
    assert len(page.images) == len(protocol.METRICS) and "table-pixel_iou_again" in page.tables


@pytest.mark.slow  # a browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no Chromium at /usr/bin/chromium: apt-get install -y chromium")
def test_the_page_in_headless_chromium(mismatched):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install playwright")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto((mismatched.folder / "comparison.html").as_uri())
            page.wait_for_load_state("load")
            images = page.evaluate("() => [...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
            tables = page.evaluate(
                "() => Object.fromEntries([...document.querySelectorAll('table[id^=table-]')].map(t => [t.id,"
                " [...t.tBodies[0].rows].map(r => [r.cells[0].textContent, ...[...r.cells].slice(1).map(c => c.dataset.value ?? null)])]))"
            )
            assert page.locator(".warning").is_visible()
        finally:
            browser.close()
    assert len(images) == len(protocol.METRICS)
    assert all(complete and width > 0 and height > 0 for complete, width, height in images)
    for name in metric_names():
        rows = {label: cells for label, *cells in tables[f"table-{name}"]}
        for label, values in expected_metric_rows(mismatched.json, name).items():
            assert_cells_equal(rows[label], values)


def write_records(folder: Path, model: str, result: protocol.ProtocolResult) -> Path:
    """``benco test``'s files (``per_image.csv`` included) for a result built from records."""
    tables.write_results(result, folder, model, str(folder / "checkpoint-best.pth"), compare=False)
    return folder


@pytest.fixture(scope="module")
def paired(tmp_path_factory):
    """``benco compare`` of a reference run with: a run whose fakes score 0.1 more pixel F1 on
    the same images, a run whose flux split holds other images, and a run without per-image
    records (300 paired resamples)."""
    root = tmp_path_factory.mktemp("paired")
    splits = {"sd15": 120, "flux": 80}
    write_records(root / "reference", "MaskCLIP", crafted_records.crafted_result(splits, seed=0))
    write_records(root / "better", "IML_ViT", crafted_records.lifted(splits, seed=0, by=0.1))
    write_records(root / "other", "IML_ViT", crafted_records.crafted_result({"sd15": 120, "flux": 90}, seed=0))
    write_run(root / "old", "Mesorch", {"sd15": COUNTS}, seed=11)
    runs = [str(root / name) for name in ("reference", "better", "other", "old")]
    result = run_compare(*runs, "--output_dir", str(root / "out"), "--bootstrap", "300")
    assert result.code == 0, result.err
    result.root = root
    return result


def test_paired_differences_of_two_runs_on_the_same_images(paired):
    better = [e for e in paired.json["paired"] if e["run"] == "IML_ViT (better)"]
    entries = {(e["split"], e["metric"]): e for e in better}
    assert set(entries) == {(s, m) for s in ("sd15", "flux", "mean") for m in metric_names()}
    assert paired.json["bootstrap"] == {"resamples": 300, "seed": 0, "level": 95}
    for split in ("sd15", "flux", "mean"):
        f1 = entries[(split, "pixel_f1")]
        assert f1["reference"] == "MaskCLIP" and f1["difference"] == pytest.approx(0.1, abs=1e-9)
        assert f1["ci95"] == pytest.approx([0.1, 0.1], abs=1e-9)
        assert entries[(split, "image_auc")]["difference"] == 0.0  # the same probabilities
    reference = json.loads((paired.root / "reference" / "opensdi_results.json").read_text())
    assert entries[("sd15", "pixel_f1")]["n"] == reference["splits"][0]["n_pixel"]
    assert entries[("mean", "image_acc")]["n"] == reference["mean"]["n_images"]
    markdown = (paired.folder / "comparison.md").read_text()
    table = markdown_rows(markdown, "Paired: IML_ViT (better) minus MaskCLIP")
    assert table["pixel F1"] == ["0.100 [0.100, 0.100] *"] * 3
    assert table["image AUC"] == ["0.000 [0.000, 0.000]"] * 3 and "Paired: IML_ViT (better) minus" in paired.out
    page = PageReader((paired.folder / "comparison.html").read_text())
    cells = {row[0][0]: row[1:] for row in page.tables["paired-1"] if row}
    assert [float(value) for _, value in cells["pixel F1"]] == pytest.approx([0.1] * 3, abs=1e-9)


def test_what_cannot_be_paired_is_named(paired):
    other = {e["split"] for e in paired.json["paired"] if e["run"] == "IML_ViT (other)"}
    assert other == {"sd15", "mean"}
    assert paired.json["not_paired"] == [
        "Mesorch: no per-image records beside its results; shown, not paired",
        "split 'flux': IML_ViT (other) scored other images than MaskCLIP; left unpaired",
    ]
    assert "benco compare: not paired: split 'flux': IML_ViT (other) scored other images" in paired.err
    assert "Not paired: Mesorch: no per-image records" in (paired.folder / "comparison.md").read_text()


def test_a_run_compared_with_itself_differs_by_zero(paired, tmp_path):
    shutil.copytree(paired.root / "reference", tmp_path / "again")
    saved = comparison.as_json(comparison.compare([paired.root / "reference", tmp_path / "again"]))
    assert len(saved["paired"]) == 3 * len(metric_names())
    assert all(e["difference"] == 0.0 and e["ci95"] == [0.0, 0.0] for e in saved["paired"])
    assert saved["mismatches"] == []


def test_runs_on_different_files_are_flagged_and_older_results_still_read(tmp_path):
    for name, digest in (("a", "1" * 64), ("b", "2" * 64)):
        write_run(tmp_path / name, "MaskCLIP", {"sd15": COUNTS, "sd2": COUNTS}, seed=12)
        path = tmp_path / name / "opensdi_results.json"
        payload = json.loads(path.read_text())
        payload["fingerprints"] = {"sd15": {"kind": "parquet", "files": [], "sha256": digest}}
        payload["fingerprints"]["sd2"] = {"kind": "parquet", "files": [], "sha256": "3" * 64}
        path.write_text(json.dumps(payload))
    write_run(tmp_path / "old", "MaskCLIP", {"sd15": COUNTS, "sd2": COUNTS}, seed=12)
    old = tmp_path / "old" / "opensdi_results.json"
    payload = json.loads(old.read_text())
    added = ("tpr_at_fpr5", "ece", "real_fpr", "real_area", "n_empty_mask")
    for row in [*payload["splits"], payload["mean"]]:  # as written before this change
        for key in added:
            del row[key]
    old.write_text(json.dumps(payload))
    result = comparison.compare([tmp_path / "a", tmp_path / "b", tmp_path / "old"])
    assert result.runs[2].splits["sd15"]["ece"] is None and result.means["MaskCLIP (old)"]["pixel_f1"] is not None
    data = [m for m in result.mismatches if m.kind == "data"]
    assert [m.split for m in data] == ["sd15"]
    assert data[0].values == {"MaskCLIP (a)": "1" * 64, "MaskCLIP (b)": "2" * 64}
    assert "**Warning:** split 'sd15': the runs read different files" in comparison.markdown(result)
