"""The ``benco`` command (also installed as ``benco-opensdi``): IMDLBenCo's own CLI plus ``opensdi``,
``train``, ``test``, ``compare``, ``predict``, ``serve``, ``demo``, ``weights``.

``init``, ``env`` and ``-v`` go to IMDLBenCo's CLI unchanged, so installing this package after
imdlbenco leaves ``benco init`` working exactly as before. Each command of ours lives in
``imdlbenco_maskclip.cli.<name>`` with ``configure(parser)`` and ``run(args) -> int``, imported
by name from ``COMMANDS``; those modules import torch, open_clip and Benco inside ``run``, so
that ``--help`` and argument errors answer without importing them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from imdlbenco_maskclip.common.errors import UserError

COMMANDS = {
    "train": "train a registered model (MaskCLIP or a Benco baseline) on OpenSDI shards or Benco data",
    "test": "run the OpenSDI protocol on a checkpoint; write the results tables and an HTML report",
    "compare": "several runs' protocol tables side by side: Markdown, CSV, JSON and an HTML page with charts",
    "predict": "write masks, overlays and fake probabilities for images, folders or shards",
    "serve": "a local web page: drop an image, see the checkpoint's mask and fake probability",
    "demo": "train the tiny MaskCLIP on the embedded synthetic sample on CPU, then test it",
    "opensdi": "inspect OpenSDI parquet shards, audit their metadata, or export them to Benco's Tp/Gt folders or JSON list",
    "weights": "what a checkpoint holds and whether it loads (info); a weight folder to share on the hub (export)",
}
BENCO_COMMANDS = {
    "init": "IMDLBenCo: initialize the scripts and configs in a directory",
    "env": "IMDLBenCo: show environment information",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benco",
        allow_abbrev=False,
        description="IMDLBenCo with MaskCLIP and OpenSDI. 'init', 'env' and '-v' are IMDLBenCo's own.",
    )
    parser.add_argument("-v", "--version", action="store_true", help="IMDLBenCo's version and update check")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        importlib.import_module(f"imdlbenco_maskclip.cli.{name}").configure(sub)
    for name, help_text in BENCO_COMMANDS.items():
        subparsers.add_parser(name, help=help_text, add_help=False)
    return parser


def _run_benco(argv: Sequence[str]) -> int:
    from IMDLBenCo import cli as benco_cli

    saved = sys.argv
    sys.argv = ["benco", *argv]
    try:
        benco_cli.main()
    finally:
        sys.argv = saved
    return 0


def _show_our_logs() -> None:
    """Print this package's INFO messages (e.g. which weights loaded), not every library's."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("imdlbenco_maskclip", "dataset_adapters"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``benco``, ``benco-opensdi`` and ``python -m imdlbenco_maskclip``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    if first not in COMMANDS and argv and argv not in (["-h"], ["--help"]):
        return _run_benco(argv)
    parser = build_parser()
    args, leftover = parser.parse_known_args(argv)
    if leftover and not getattr(args, "accepts_model_flags", False):
        parser.error(f"unrecognized arguments: {' '.join(leftover)}")
    args.model_flags = leftover
    if args.command is None:
        parser.print_help()
        return 0
    _show_our_logs()
    from imdlbenco_maskclip.host.registration import quiet_benco_import

    quiet_benco_import()
    command = importlib.import_module(f"imdlbenco_maskclip.cli.{args.command}")
    from dataset_adapters.errors import OpenSDIError

    try:
        return int(command.run(args) or 0)
    except KeyboardInterrupt:
        print("benco: interrupted", file=sys.stderr)
        return 130
    except (UserError, OpenSDIError, FileNotFoundError) as error:
        # One write, so that the messages of several torchrun processes never share a line.
        sys.stderr.write(f"benco {args.command}: error: {error}\n")
        sys.stderr.flush()
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
