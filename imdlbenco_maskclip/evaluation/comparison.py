"""Several runs' OpenSDI tables side by side, with whatever makes them incomparable said aloud.

Each run is an ``opensdi_results.json`` written by ``benco test`` (MaskCLIP or a Benco
baseline). The runs are aligned by split (generator). A split that not every run tested, or
that the runs scored on different numbers of images (any of ``protocol.COUNTS``), is a
mismatch: it is listed in every output instead of being averaged in silence, and each run's
mean is recomputed (as ``benco test`` computes it) over the splits that all runs tested, so
that no run's mean covers a generator another's leaves out. Runs whose data fingerprints
differ for a split they share (other files, or another hub revision) are flagged the same way;
results written before fingerprints were recorded are read and simply not checked. The figures
and columns come from ``protocol.METRICS``; the paper's rows, from the metrics whose ``paper``
names a leaderboard figure.

Each run with a ``per_image.csv`` beside its results is paired with the first run given (the
reference) image by image: on every split both scored on the same images (same names and
labels), each figure's difference (run minus reference) with its paired-bootstrap 95%
interval, and the same for the mean over those splits (``bootstrap.paired_differences``). A
split whose images differ is named and left unpaired; runs without per-image records, and the
paper's rows, are shown but not paired.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any

from imdlbenco_maskclip.common import html_page
from imdlbenco_maskclip.common.atomic import write_text
from imdlbenco_maskclip.common.errors import UserError
from imdlbenco_maskclip.common.html_page import Estimate
from imdlbenco_maskclip.evaluation import bootstrap, leaderboard, per_image, protocol, tables

RESULTS_NAME = "opensdi_results.json"
COUNT_TITLES = {"n_pixel": "partial fakes", "n_images": "images", "n_real": "real images", "n_fake": "fake images"}


@dataclass
class ComparedRun:
    """One ``benco test`` result: the file it came from, its label here, its rows by split
    (each metric of ``METRICS`` and each count, None where absent), each split's data
    fingerprint (empty for older results) and its ``per_image.csv`` (None when absent)."""

    source: Path
    model: str
    checkpoint: str | None
    selected_on: str | None
    splits: dict[str, dict[str, Any]]
    label: str = ""
    fingerprints: dict[str, dict[str, Any]] = field(default_factory=dict)
    per_image: Path | None = None


@dataclass
class PaperRow:
    """One model of the paper's leaderboard: its figure per metric, per split and ``mean``;
    ``same_model`` when one of the runs is that model (those rows are also drawn)."""

    name: str
    values: dict[str, dict[str, float | None]]
    same_model: bool

    @property
    def label(self) -> str:
        return f"{self.name} (paper)"


@dataclass
class Mismatch:
    """Why one split is not comparable across the runs: ``kind`` is ``split`` (not every run
    tested it; ``values``: label -> tested), ``counts`` (``values``: each count that differs
    -> label -> count) or ``data`` (the fingerprints differ; ``values``: label -> digest)."""

    kind: str
    split: str
    values: dict[str, Any]
    message: str


@dataclass
class Paired:
    """One run against the reference, image by image: the splits paired, each figure's
    difference per split and for their mean, and what could not be paired, in words."""

    run: str
    reference: str
    splits: list[str]
    differences: list[bootstrap.Difference]
    unpaired: list[str]


@dataclass
class Comparison:
    """The aligned runs: every split any run tested (``splits``), those all tested
    (``common``), each run's mean over ``common``, the mismatches, the paper's rows, the
    paired comparisons with the reference (the first run), what was not paired and why, and
    how the paired intervals were drawn (``intervals``)."""

    runs: list[ComparedRun]
    splits: list[str]
    common: list[str]
    means: dict[str, dict[str, Any]]
    mismatches: list[Mismatch]
    paper: list[PaperRow] = field(default_factory=list)
    paired: list[Paired] = field(default_factory=list)
    not_paired: list[str] = field(default_factory=list)
    intervals: bootstrap.Settings = field(default_factory=bootstrap.Settings)

    def mean_title(self) -> str:
        return "mean" if self.common == self.splits else "mean of common splits"

    def mean_note(self) -> str:
        """What the mean column is computed over, in words."""
        if not self.common:
            return "Mean: none, since no split was tested by every run."
        left_out = [s for s in self.splits if s not in self.common]
        return f"Mean: unweighted, over the {len(self.common)} split(s) every run tested ({', '.join(self.common)})" + (
            f"; left out because not every run tested them: {', '.join(left_out)}." if left_out else "."
        )


def results_file(path: Path) -> Path:
    """The ``opensdi_results.json`` that ``path`` names: the file itself or the one in the folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / RESULTS_NAME
    if not path.is_file():
        raise UserError(f"{path}: no such file (give a folder where benco test wrote {RESULTS_NAME}, or the file)")
    return path


def _number(value: Any, where: str, key: str, kind: type | tuple[type, ...]) -> Any:
    """``value`` if it is null or of ``kind`` (not a bool), else an error naming ``key``."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
        raise UserError(f"{where}: '{key}' must be a number or null, got {value!r}")
    return value


def load_run(path: Path) -> ComparedRun:
    """One result file (or folder) read and checked; errors name the file and the key at fault."""
    source = results_file(path)
    try:
        payload = json.loads(source.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{source}: not valid JSON: {error}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("model"), str) or not payload["model"]:
        raise UserError(f"{source}: not a benco test result (no 'model' name)")
    rows = payload.get("splits")
    if not isinstance(rows, list) or not rows:
        raise UserError(f"{source}: not a benco test result (no 'splits' list, or an empty one)")
    splits: dict[str, dict[str, Any]] = {}
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("split"), str):
            raise UserError(f"{source}: every entry of 'splits' must be an object with a 'split' name, got {row!r}")
        where = f"{source}: split '{row['split']}'"
        if row["split"] in splits:
            raise UserError(f"{where} appears twice")
        splits[row["split"]] = {
            **{m.name: _number(row.get(m.name), where, m.name, (int, float)) for m in protocol.METRICS},
            **{c: _number(row.get(c), where, c, int) for c in protocol.COUNTS},
        }
    fingerprints = payload.get("fingerprints") or {}
    if not isinstance(fingerprints, dict) or not all(isinstance(f, dict) for f in fingerprints.values()):
        raise UserError(f"{source}: 'fingerprints' must map each split to an object, got {fingerprints!r}")
    beside = source.parent / per_image.FILE_NAME
    return ComparedRun(
        source,
        payload["model"],
        payload.get("checkpoint"),
        payload.get("selected_on"),
        splits,
        fingerprints=fingerprints,
        per_image=beside if beside.is_file() else None,
    )


def label_runs(runs: Sequence[ComparedRun]) -> None:
    """Label each run by its model name; runs that share one get the shortest tail of their
    paths (the folder name, usually) that tells them apart."""
    for model in dict.fromkeys(r.model for r in runs):
        same = [r for r in runs if r.model == model]
        if len(same) == 1:
            same[0].label = model
            continue
        paths = [r.source.resolve() for r in same]
        tails = [p.parent.parts if p.name == RESULTS_NAME else p.parts for p in paths]
        depth = 1
        while len({t[-depth:] for t in tails}) < len(same):
            depth += 1
        for run, tail in zip(same, tails):
            run.label = f"{model} ({'/'.join(tail[-depth:])})"


def _mismatches(runs: Sequence[ComparedRun], splits: Sequence[str]) -> list[Mismatch]:
    found = []
    for split in splits:
        tested = {r.label: split in r.splits for r in runs}
        if not all(tested.values()):
            found.append(
                Mismatch(
                    "split",
                    split,
                    tested,
                    f"split '{split}' was tested by {', '.join(k for k, v in tested.items() if v)} only, "
                    f"not by {', '.join(k for k, v in tested.items() if not v)}; it is left out of the mean",
                )
            )
            continue
        differ = {}
        for count in protocol.COUNTS:
            values = {r.label: r.splits[split][count] for r in runs}
            if len({v for v in values.values() if v is not None}) > 1:
                differ[count] = values
        if differ:
            listed = "; ".join(
                f"{COUNT_TITLES.get(c, c)}: {', '.join(f'{k} {v}' for k, v in values.items())}"
                for c, values in differ.items()
            )
            found.append(
                Mismatch("counts", split, differ, f"split '{split}': the runs did not score the same images ({listed})")
            )
        digests = {r.label: r.fingerprints[split].get("sha256") for r in runs if split in r.fingerprints}
        if len(set(digests.values())) > 1:
            listed = ", ".join(f"{k} {str(v)[:12]}" for k, v in digests.items())
            found.append(
                Mismatch(
                    "data",
                    split,
                    digests,
                    f"split '{split}': the runs read different files (data fingerprints differ: {listed})",
                )
            )
    return found


def _mean(run: ComparedRun, common: Sequence[str]) -> dict[str, Any]:
    """``benco test``'s mean row, over ``common`` only."""
    rows = [
        protocol.SplitScores(
            s,
            {m.name: run.splits[s][m.name] for m in protocol.METRICS},
            *(run.splits[s][c] or 0 for c in protocol.COUNTS),
        )
        for s in common
    ]
    mean = protocol.mean_row(rows).as_dict()
    del mean["split"]
    return mean


def _paper_rows(runs: Sequence[ComparedRun], splits: Sequence[str], common: Sequence[str]) -> list[PaperRow]:
    """The leaderboard's figures on ``splits``; the mean is the paper's own where ``common``
    is exactly the paper's generators, else the mean of its figures on ``common``."""
    generators = leaderboard.leaderboard()["generators"]
    ours = {leaderboard.PAPER_NAMES.get(r.model, r.model) for r in runs}
    rows = []
    for name in leaderboard.paper_rows():
        values = {}
        for metric in (m for m in protocol.METRICS if m.paper):
            figures = {s: leaderboard.paper_value(name, s, metric) for s in splits}
            if all(v is None for v in figures.values()):
                continue
            on_common = [figures[s] for s in common]
            if sorted(common) == sorted(generators):
                figures["mean"] = leaderboard.paper_value(name, "mean", metric)
            else:
                figures["mean"] = fmean(on_common) if on_common and None not in on_common else None
            values[metric.name] = figures
        if values:
            rows.append(PaperRow(name, values, name in ours))
    return rows


def _aligned(
    reference: Sequence[protocol.ImageRecord], other: Sequence[protocol.ImageRecord]
) -> list[protocol.ImageRecord] | None:
    """``other``'s records in the order of ``reference``'s, when both hold the same images
    (names, each once, with the same labels); else None."""
    by_name = {r.name: r for r in other}
    if len(by_name) != len(other) or len(other) != len(reference) or len({r.name for r in reference}) != len(reference):
        return None
    if any(r.name not in by_name or by_name[r.name].label != r.label for r in reference):
        return None
    return [by_name[r.name] for r in reference]


def pair_runs(runs: Sequence[ComparedRun], settings: bootstrap.Settings) -> tuple[list[Paired], list[str]]:
    """Each run with per-image records against the first run, split by split, and what was
    left unpaired and why."""
    reference, others = runs[0], runs[1:]
    if not others:
        return [], []
    base = per_image.read(reference.per_image) if reference.per_image is not None else {}
    if not base:
        return [], [f"no run is paired: the reference {reference.label} has no per-image records beside its results"]
    paired, not_paired = [], []
    for run in others:
        records = per_image.read(run.per_image) if run.per_image is not None else {}
        if not records:
            not_paired.append(f"{run.label}: no per-image records beside its results; shown, not paired")
            continue
        pairs, unpaired = {}, []
        for split in (s for s in base if s in records):
            aligned = _aligned(base[split], records[split])
            if aligned is None:
                unpaired.append(
                    f"split '{split}': {run.label} scored other images than {reference.label}; left unpaired"
                )
            else:
                pairs[split] = (base[split], aligned)
        differences = bootstrap.paired_differences(pairs, protocol.METRICS, settings) if pairs else []
        paired.append(Paired(run.label, reference.label, list(pairs), differences, unpaired))
    return paired, not_paired


def compare(paths: Sequence[Path], with_paper: bool = False, settings: bootstrap.Settings | None = None) -> Comparison:
    """Read the runs at ``paths``, align them by split, find what is not comparable and pair
    each run with the first (``settings``: the paired bootstrap's resamples and seed)."""
    if not paths:
        raise UserError("no results given: name at least one folder or opensdi_results.json")
    runs, seen = [], {}
    for path in paths:
        run = load_run(path)
        resolved = run.source.resolve()
        if resolved in seen:
            raise UserError(f"{run.source}: given twice (also as {seen[resolved]})")
        seen[resolved] = path
        runs.append(run)
    label_runs(runs)
    splits = list(dict.fromkeys(s for r in runs for s in r.splits))
    common = [s for s in splits if all(s in r.splits for r in runs)]
    means = {r.label: _mean(r, common) for r in runs}
    paper = _paper_rows(runs, splits, common) if with_paper else []
    settings = settings or bootstrap.Settings()
    paired, not_paired = pair_runs(runs, settings)
    return Comparison(runs, splits, common, means, _mismatches(runs, splits), paper, paired, not_paired, settings)


def metric_rows(comparison: Comparison, metric: protocol.Metric) -> list[tuple[str, list[Any], PaperRow | None]]:
    """(label, figures per split then the mean, the paper's row or None) of each run, then of
    each paper row that reports ``metric``."""
    rows: list[tuple[str, list[Any], PaperRow | None]] = []
    for run in comparison.runs:
        figures = [run.splits.get(s, {}).get(metric.name) for s in comparison.splits]
        rows.append((run.label, [*figures, comparison.means[run.label][metric.name]], None))
    for paper in comparison.paper:
        reported = paper.values.get(metric.name)
        if reported:
            rows.append((paper.label, [*(reported[s] for s in comparison.splits), reported["mean"]], paper))
    return rows


def count_rows(comparison: Comparison) -> list[list[Any]]:
    """Per run and count: the count per split, then its total over the common splits."""
    return [
        [
            r.label,
            COUNT_TITLES.get(c, c),
            *(r.splits.get(s, {}).get(c) for s in comparison.splits),
            comparison.means[r.label][c],
        ]
        for r in comparison.runs
        for c in protocol.COUNTS
    ]


def _runs_table(comparison: Comparison) -> tuple[list[str], list[list[Any]]]:
    header = ["run", "model", "checkpoint", "selected on", "results"]
    return header, [[r.label, r.model, r.checkpoint, r.selected_on, str(r.source)] for r in comparison.runs]


def paired_tables(comparison: Comparison) -> list[tuple[Paired, list[str], list[list[Any]]]]:
    """Per paired run: (the pairing, header, a row per metric: its title, then per paired split
    and the mean the difference as an ``Estimate`` marked when its interval excludes 0)."""
    found = []
    for pairing in comparison.paired:
        columns = [*pairing.splits, "mean"]
        by_key = {(d.metric, d.split): d for d in pairing.differences}
        rows = []
        for metric in protocol.METRICS:
            cells: list[Any] = [metric.title]
            for split in columns:
                d = by_key.get((metric.name, split))
                if d is None or d.difference is None:
                    cells.append(None)
                else:
                    low, high = d.ci95 if d.ci95 else (None, None)
                    cells.append(Estimate(d.difference, low, high, d.excludes_zero))
            rows.append(cells)
        found.append((pairing, ["figure", *columns], rows))
    return found


def paired_note(comparison: Comparison) -> str:
    """How the paired differences were made and how to read them."""
    settings = comparison.intervals
    return (
        f"Each figure of a run minus the reference's ({comparison.runs[0].label}) on the same images, with its 95% "
        f"paired-bootstrap interval ({settings.resamples} resamples, seed {settings.seed}; both runs scored on the same "
        "redrawn images); * marks an interval that excludes 0. Lower is better for "
        + ", ".join(m.title for m in protocol.METRICS if not m.higher_is_better)
        + "."
    )


def unpaired_lines(comparison: Comparison) -> list[str]:
    """What was left unpaired, one sentence each."""
    return [*comparison.not_paired, *(line for p in comparison.paired for line in p.unpaired)]


def _paper_note() -> str:
    board = leaderboard.leaderboard()
    return f"Paper figures: {board['source']}. {board.get('note', '')}".rstrip()


def tables_markdown(comparison: Comparison) -> str:
    """The runs, one table per metric and the counts, in Markdown: what ``benco compare`` prints."""
    header = ["run", *comparison.splits, comparison.mean_title()]
    parts = ["## Runs\n\n" + tables.markdown_table(*_runs_table(comparison)), comparison.mean_note()]
    for metric in protocol.METRICS:
        rows = [[label, *values] for label, values, _ in metric_rows(comparison, metric)]
        parts.append(f"## {metric.title}\n\n" + tables.markdown_table(header, rows))
    counts_header = ["run", "count", *comparison.splits, "total of common splits"]
    parts.append("## Images behind the figures\n\n" + tables.markdown_table(counts_header, count_rows(comparison)))
    for pairing, header, rows in paired_tables(comparison):
        parts.append(
            f"## Paired: {pairing.run} minus {pairing.reference}\n\n"
            + (
                tables.markdown_table(header, rows)
                if pairing.splits
                else "No split holds the same images in both runs."
            )
        )
    if comparison.paired:
        parts.append(paired_note(comparison))
    parts += [f"Not paired: {line}" for line in unpaired_lines(comparison)]
    if comparison.paper:
        parts.append(_paper_note())
    return "\n\n".join(parts)


def markdown(comparison: Comparison) -> str:
    """``comparison.md``: a title, the mismatches as warnings, then the tables."""
    warnings = "".join(f"**Warning:** {m.message}.\n\n" for m in comparison.mismatches)
    title = f"# OpenSDI comparison: {', '.join(r.label for r in comparison.runs)}"
    return f"{title}\n\n{warnings}{tables_markdown(comparison)}\n"


def csv_text(comparison: Comparison) -> str:
    """``comparison.csv``: one line per run (or paper row) and split, then its ``mean`` line;
    ``in_mean`` says whether the split counts in the mean (1) or not (0)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["run", "model", "split", "in_mean", *(m.name for m in protocol.METRICS), *protocol.COUNTS])
    for run in comparison.runs:
        for split, row in run.splits.items():
            writer.writerow([run.label, run.model, split, int(split in comparison.common), *row.values()])
        writer.writerow([run.label, run.model, "mean", "", *comparison.means[run.label].values()])
    for paper in comparison.paper:
        for split in [*comparison.splits, "mean"]:
            in_mean = "" if split == "mean" else int(split in comparison.common)
            figures = [paper.values.get(m.name, {}).get(split) for m in protocol.METRICS]
            writer.writerow([paper.label, paper.name, split, in_mean, *figures, *([None] * len(protocol.COUNTS))])
    return buffer.getvalue()


def as_json(comparison: Comparison) -> dict[str, Any]:
    """``comparison.json``: the metrics, the splits, ``mean_over`` (the common splits), each
    run with its rows and mean, the ``mismatches``, and the paper's rows (or null)."""
    return {
        "metrics": [
            {"name": m.name, "title": m.title, "population": m.population, "higher_is_better": m.higher_is_better}
            for m in protocol.METRICS
        ],
        "splits": comparison.splits,
        "mean_over": comparison.common,
        "runs": [
            {
                "label": r.label,
                "model": r.model,
                "source": str(r.source),
                "checkpoint": r.checkpoint,
                "selected_on": r.selected_on,
                "splits": r.splits,
                "mean": comparison.means[r.label],
            }
            for r in comparison.runs
        ],
        "mismatches": [
            {"kind": m.kind, "split": m.split, "values": m.values, "message": m.message} for m in comparison.mismatches
        ],
        "bootstrap": comparison.intervals.as_dict(),
        "paired": [
            {
                "run": p.run,
                "reference": p.reference,
                "split": d.split,
                "metric": d.metric,
                "difference": d.difference,
                "ci95": None if d.ci95 is None else list(d.ci95),
                "n": d.n,
            }
            for p in comparison.paired
            for d in p.differences
        ],
        "not_paired": unpaired_lines(comparison),
        "paper": {
            "source": leaderboard.leaderboard()["source"],
            "rows": [
                {"label": p.label, "name": p.name, "same_model": p.same_model, "values": p.values}
                for p in comparison.paper
            ],
        }
        if comparison.paper
        else None,
    }


def chart(comparison: Comparison, metric: protocol.Metric) -> str:
    """Grouped bars of ``metric``: one group per split and one for the mean, one colour per run
    (the paper's rows of the runs' own models hatched); a PNG data URI."""
    plt = html_page.pyplot()
    series = [row for row in metric_rows(comparison, metric) if row[2] is None or row[2].same_model]
    mean = "mean" if comparison.common == comparison.splits else "mean of\ncommon splits"
    groups = [*(s if s in comparison.common else f"{s}*" for s in comparison.splits), mean]
    figure, axes = plt.subplots(figsize=(min(16.0, max(6.0, 0.3 * len(groups) * len(series) + 2)), 3.6))
    colours = plt.get_cmap("tab10" if len(series) <= 10 else "tab20").colors
    html_page.grouped_bars(
        axes,
        groups,
        [
            (
                label,
                values,
                {
                    "color": colours[i % len(colours)],
                    **({"hatch": "//", "edgecolor": "white"} if paper is not None else {}),
                },
            )
            for i, (label, values, paper) in enumerate(series)
        ],
    )
    if not any(v is not None for _, values, _ in series for v in values):
        axes.text(0.5, 0.5, "no run reports this figure", ha="center", va="center", transform=axes.transAxes)
    axes.axvline(len(groups) - 1.5, color="#888", linewidth=0.8, linestyle=":")
    axes.set_xlim(-0.6, len(groups) - 0.4)
    axes.set_ylim(bottom=0)
    axes.set_ylabel(metric.title)
    axes.set_title(f"{metric.title} ({'higher' if metric.higher_is_better else 'lower'} is better)")
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    return html_page.figure_uri(figure)


def html(comparison: Comparison) -> str:
    """``comparison.html``: the warnings, then per metric a chart and its table, then the counts;
    one self-contained file."""
    escape = html_page.escape
    title = f"OpenSDI comparison: {', '.join(r.label for r in comparison.runs)}"
    body = [html_page.table_html(*_runs_table(comparison), table_id="runs", css="facts")]
    if comparison.mismatches:
        items = "".join(f"<li>{escape(m.message)}</li>" for m in comparison.mismatches)
        body.append(
            '<div class="warning" id="mismatches"><strong>Warning: the runs are not fully comparable.</strong>'
            f"<ul>{items}</ul></div>"
        )
    body.append(f'<p id="mean-note">{escape(comparison.mean_note())}</p>')
    header = ["run", *comparison.splits, comparison.mean_title()]
    caption = "One colour per run"
    if any(p.same_model for p in comparison.paper):
        caption += "; hatched: the paper's figure for a run's model"
    if comparison.common != comparison.splits:
        caption += "; *: not tested by every run, left out of the mean"
    for metric in protocol.METRICS:
        rows = [[label, *values] for label, values, _ in metric_rows(comparison, metric)]
        body.append(
            f'<h2 id="{escape(metric.name)}">{escape(metric.title)}</h2>'
            + html_page.figure_html(
                chart(comparison, metric), f"{metric.title} per split. {caption}.", f"chart-{metric.name}"
            )
            + html_page.table_html(header, rows, table_id=f"table-{metric.name}")
        )
    counts_header = ["run", "count", *comparison.splits, "total of common splits"]
    body.append(
        "<h2>Images behind the figures</h2>"
        + html_page.table_html(counts_header, count_rows(comparison), table_id="table-counts")
    )
    if comparison.paired:
        body.append(f'<h2 id="paired">Paired differences</h2><p>{escape(paired_note(comparison))}</p>')
    for number, (pairing, header, rows) in enumerate(paired_tables(comparison), 1):
        body.append(
            f"<h3>{escape(pairing.run)} minus {escape(pairing.reference)}</h3>"
            + html_page.table_html(header, rows, table_id=f"paired-{number}", css="estimates")
        )
    if unpaired_lines(comparison):
        items = "".join(f"<li>{escape(line)}</li>" for line in unpaired_lines(comparison))
        body.append(f'<div id="not-paired"><strong>Not paired:</strong><ul>{items}</ul></div>')
    if comparison.paper:
        body.append(f"<p>{escape(_paper_note())}</p>")
    return html_page.page(title, "\n".join(body))


def write(comparison: Comparison, output_dir: Path) -> list[Path]:
    """``comparison.{md,csv,json,html}`` in ``output_dir``; returns the paths written."""
    output_dir = Path(output_dir).expanduser()
    texts = {
        "md": markdown(comparison),
        "csv": csv_text(comparison),
        "json": json.dumps(as_json(comparison), indent=2) + "\n",
        "html": html(comparison),
    }
    paths = []
    for extension, text in texts.items():
        path = output_dir / f"comparison.{extension}"
        write_text(path, text)
        paths.append(path)
    return paths
