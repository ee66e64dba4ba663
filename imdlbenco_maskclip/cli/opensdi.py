"""``benco opensdi``: inspect OpenSDI parquet shards (``info``), export them for Benco (``export``), or
check whether image metadata alone separates real from fake (``audit``)."""

from __future__ import annotations

import argparse
import os

from imdlbenco_maskclip.cli.options import GENERATORS_HELP

GENERATOR_HELP = f"generators to keep, from the shard names ({GENERATORS_HELP}); default: all present"
SOURCE_HELP = "shard folder, parquet file(s) or glob, or a hub id such as nebula/OpenSDI_test"


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="opensdi_command", metavar="ACTION", required=True)

    info = actions.add_parser(
        "info",
        help="rows per generator, kind and class; image sizes",
        description="Rows per generator x {entire, partial, other} x {real, fake}, and image sizes. "
        "Counts read only keys and labels; sizes parse the image headers of whole row groups spread "
        "over the shards until about --size-rows rows are covered (0: every row, which reads all the data).",
    )
    info.add_argument("source", nargs="+", metavar="SRC", help=SOURCE_HELP)
    info.add_argument("--generators", nargs="+", metavar="GEN", help=GENERATOR_HELP)
    info.add_argument(
        "--size-rows",
        type=int,
        default=2000,
        metavar="N",
        help="rows whose image headers are read for the size range (default 2000; 0: all)",
    )

    export = actions.add_parser(
        "export",
        help="write Benco's Tp/Gt folders or a JSON list (image bytes copied unchanged)",
        description="Write the shards as Benco's ManiDataset folders (DST/Tp, DST/Gt) or as images plus a "
        "JsonDataset list (DST/opensdi.json, or DST itself when it ends in .json, with the images in the "
        "folder of the same name). Re-running after an interruption finishes the job.",
    )
    export.add_argument("source", nargs="+", metavar="SRC", help=SOURCE_HELP)
    export.add_argument("destination", metavar="DST", help="output folder (json: or the list's path, NAME.json)")
    export.add_argument(
        "--format",
        choices=("mani", "json"),
        default="mani",
        help="mani: Tp/Gt folders for ManiDataset (default); json: a list for JsonDataset",
    )
    export.add_argument("--generators", nargs="+", metavar="GEN", help=GENERATOR_HELP)
    export.add_argument(
        "--subset",
        choices=("all", "detection", "localization"),
        default="all",
        help="all/detection: every row; localization: fake rows with a mask",
    )

    audit = actions.add_parser(
        "audit",
        help="can image size, format and JPEG quality alone tell real from fake?",
        description="Read every image header (no pixels decoded, no model): per generator and label the "
        "width, height, format, JPEG quality (estimated from the luminance quantization table) and bytes "
        "per pixel, and the stratified k-fold accuracy (k = min(5, smallest class)) of a small decision "
        "tree that sees only these, real vs fake within each generator. Writes DIR/audit.json and "
        "DIR/audit.png and prints one line per generator. Reads all the image bytes of SRC.",
    )
    audit.add_argument("source", nargs="+", metavar="SRC", help=SOURCE_HELP)
    audit.add_argument("--generators", nargs="+", metavar="GEN", help=GENERATOR_HELP)
    audit.add_argument(
        "--output_dir",
        metavar="DIR",
        help="folder for audit.json and audit.png (default: SRC when it is one local folder, "
        "where 'benco test' finds the audit and shows it in its report; else the current folder)",
    )


def run(args: argparse.Namespace) -> int:
    source = args.source[0] if len(args.source) == 1 else list(args.source)
    if args.opensdi_command == "info":
        from dataset_adapters.info import opensdi_info

        print(opensdi_info(source, args.generators, args.size_rows).format())
        return 0
    if args.opensdi_command == "audit":
        from pathlib import Path

        from dataset_adapters.audit import audit_opensdi
        from dataset_adapters.errors import OpenSDIError
        from imdlbenco_maskclip.evaluation.audit_figure import write_audit_figure

        output_dir = args.output_dir or (source if isinstance(source, str) and os.path.isdir(source) else ".")
        if os.path.exists(output_dir) and not os.path.isdir(output_dir):
            raise OpenSDIError(f"--output_dir {output_dir} is a file, not a folder")
        result = audit_opensdi(source, args.generators)
        print(result.format())
        written = result.write(output_dir)
        print(f"wrote {written} and {write_audit_figure(result, Path(output_dir))}")
        return 0
    from dataset_adapters.export import export_opensdi

    target = export_opensdi(source, args.destination, args.format, args.generators, args.subset)
    kind = "ManiDataset folder" if args.format == "mani" else "JsonDataset list"
    print(f"wrote the {kind} {target}")
    return 0
