"""``benco compare``: the OpenSDI tables of several ``benco test`` runs side by side."""

from __future__ import annotations

import argparse
import sys

from imdlbenco_maskclip.cli.options import parse_count, parse_seed


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "results",
        nargs="+",
        metavar="RESULTS",
        help="folders where benco test wrote opensdi_results.json, or those files (MaskCLIP and Benco baselines alike)",
    )
    parser.add_argument(
        "--output_dir",
        "--output-dir",
        default=".",
        metavar="DIR",
        help="where comparison.md, .csv, .json and .html go (default: the current folder)",
    )
    parser.add_argument(
        "--compare_paper",
        "--compare-paper",
        action="store_true",
        help="add the paper's leaderboard rows beside the runs, for the figures it reports",
    )
    parser.add_argument(
        "--bootstrap",
        type=parse_count,
        default=1000,
        metavar="N",
        help="resamples of the paired 95%% intervals (0: differences without intervals; default: 1000)",
    )
    parser.add_argument(
        "--bootstrap_seed",
        "--bootstrap-seed",
        type=parse_seed,
        default=0,
        metavar="N",
        help="seed of the paired resamples (default: 0)",
    )
    parser.epilog = (
        "Splits that not every run tested, that the runs scored on different numbers of images or on "
        "different files, are flagged; the mean covers only the splits every run tested. Runs with a "
        "per_image.csv are paired image by image with the first run given."
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from imdlbenco_maskclip.evaluation import comparison
    from imdlbenco_maskclip.evaluation.bootstrap import Settings

    result = comparison.compare(
        [Path(p) for p in args.results], args.compare_paper, Settings(args.bootstrap, args.bootstrap_seed)
    )
    print(comparison.tables_markdown(result))
    written = comparison.write(result, Path(args.output_dir))
    print("\nWrote " + ", ".join(str(p) for p in written))
    for line in comparison.unpaired_lines(result):
        print(f"benco compare: not paired: {line}", file=sys.stderr)
    warnings = [m.message for m in result.mismatches]
    if args.compare_paper and not result.paper:
        warnings.append(f"the paper reports none of the splits {', '.join(result.splits)}: no paper rows")
    for warning in warnings:
        print(f"benco compare: warning: {warning}", file=sys.stderr)
    return 0
