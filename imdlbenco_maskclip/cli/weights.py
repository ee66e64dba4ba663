"""``benco weights``: what a checkpoint holds (``info``) and a weight folder to share it (``export``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CHECKPOINT_HELP = (
    "a checkpoint file or weight folder: a local path, hf://OWNER/REPO/FILE, or hf://OWNER/REPO[/FOLDER/] "
    "(@REVISION after the repository)"
)


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    info = actions.add_parser(
        "info",
        help="layout, model, options, epoch, selection, contents, sha256; whether it loads",
        description="Say what a checkpoint holds: its layout (this package's, Benco's, the published OpenSDI "
        "code's, a weight folder), the model and its options, epoch, what it was selected on, what else it holds "
        "(optimizer, scaler: sizes), tensor count and bytes, sha256, and whether its weights load into the model "
        "it names (missing and unexpected keys, shape mismatches). The file is memory-mapped; no model is built "
        "with --no-check, and a MaskCLIP is never built (its shapes come from the meta device).",
    )
    info.add_argument("checkpoint", metavar="CHECKPOINT", help=CHECKPOINT_HELP)
    info.add_argument(
        "--no-check", dest="check", action="store_false", help="the header only: do not check the weights"
    )
    info.add_argument("--model", metavar="NAME", help="the model to check against when the file names none")

    export = actions.add_parser(
        "export",
        help="a folder to upload to the hub as it is: model.safetensors, config.json, README.md",
        description="Write OUT_DIR/model.safetensors (the model's weights only: no optimizer or scaler), "
        "OUT_DIR/config.json (model, options, image size, padding, precision, selected_on, training data, "
        "versions) and OUT_DIR/README.md (a model card the hub reads). load_model, Predictor and benco "
        "test/predict/serve take the folder, or hf://OWNER/REPO of it, with the same outputs as the checkpoint.",
    )
    export.add_argument("checkpoint", metavar="CHECKPOINT", help=CHECKPOINT_HELP)
    export.add_argument("out_dir", metavar="OUT_DIR", help="the folder to write")
    export.add_argument(
        "--results",
        metavar="JSON",
        help="a benco test result of this checkpoint (opensdi_results.json or its folder): its table goes in the card",
    )
    export.add_argument(
        "--without-clip",
        dest="without_clip",
        action="store_true",
        help="leave a MaskCLIP's frozen CLIP out (rebuilt at load from the setting's pretrained source, recorded); "
        "when that source is at hand, the file's CLIP must equal it bit for bit",
    )
    export.add_argument(
        "--clip_pretrained",
        metavar="SRC",
        help="with --without-clip: the CLIP source to record (an open_clip tag or a file); default: the setting's",
    )
    export.add_argument("--model", metavar="NAME", help="the model, when the file names none")


def run(args: argparse.Namespace) -> int:
    from imdlbenco_maskclip.common.errors import UserError
    from imdlbenco_maskclip.host.models import as_user_error

    try:
        return _info(args) if args.weights_command == "info" else _export(args)
    except UserError:
        raise
    except (OSError, RuntimeError, ValueError, TypeError) as error:
        raise as_user_error(error, args.checkpoint) from None


def _info(args: argparse.Namespace) -> int:
    from imdlbenco_maskclip.checkpoints.inspection import describe

    info = describe(args.checkpoint, check=args.check, model_name=args.model)
    width = max(map(len, info.facts))
    for label, value in info.facts.items():
        print(f"{label:<{width}}  {value}")
    if info.fits is None:
        print(f"{'loads':<{width}}  not checked" + (" (--no-check)" if not args.check else " (no model named)"))
        return 0
    if not info.fits:
        print(f"{'loads':<{width}}  yes: every tensor has a place of its shape in {info.facts['model']}")
        return 0
    print(f"{'loads':<{width}}  no: {'; '.join(info.fits)}")
    return 1


def _export(args: argparse.Namespace) -> int:
    from imdlbenco_maskclip.checkpoints import export, folder
    from imdlbenco_maskclip.checkpoints.inspection import weights_summary
    from imdlbenco_maskclip.evaluation.model_card import model_card

    prepared = export.prepare(args.checkpoint, args.without_clip, args.clip_pretrained, args.model)
    summary = weights_summary(list(prepared.weights.values()))
    card = model_card(prepared.config, summary, Path(args.results) if args.results else None)
    out_dir = Path(args.out_dir).expanduser()
    print(f"benco weights export: writing {summary} to {out_dir}", file=sys.stderr, flush=True)
    written = folder.write(out_dir, prepared.weights, prepared.config, card)
    clip = prepared.config.get("clip") or {}
    if clip.get("left_out") == "export":
        checked = (
            f"checked bit for bit against {clip['verified_against']}"
            if clip.get("verified_against")
            else ("not checked: the source is not at hand here")
        )
        print(f"frozen CLIP left out, rebuilt from {clip['source']} at load ({checked})")
    print("Wrote " + ", ".join(str(p) for p in written))
    return 0
