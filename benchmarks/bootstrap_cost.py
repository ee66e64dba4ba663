"""What the 95% intervals add to ``benco test``'s time on the CPU demo (target: at most 10%).

``benco test`` runs in this process on the demo's test splits (five generators of the
embedded synthetic sample, 128 px) with ``--bootstrap 0`` and ``--bootstrap 1000``,
alternately, ``--rounds`` times; the medians and their ratio are printed, and, inside the
runs with intervals, the time spent drawing them (with the data fingerprints) against the
rest of the run: the ratio that stays meaningful on a busy machine. With ``--demo DIR``
(a folder ``benco demo`` wrote) its trained checkpoint and test data are used; without, the
demo's test sample is written and an untrained tiny MaskCLIP (the same cost per image) is
scored. Then the bootstrap alone is timed at the published test split's size (5 splits of
20,000 images, 5,000 partial fakes each), to show it stays vectorized at scale.

    python benchmarks/bootstrap_cost.py --rounds 3
    python benchmarks/bootstrap_cost.py --demo benco_demo
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEMO_IMAGE_SIZE = 128
DEMO_TEST_PER_CLASS = 16


def demo_inputs(demo: Path | None, folder: Path) -> tuple[Path, Path]:
    """(checkpoint, test data) of the demo: the given demo's, or the sample and an untrained tiny model."""
    if demo is not None:
        return demo / "run" / "checkpoint-last.pth", demo / "data" / "test"
    import torch

    from dataset_adapters.synthetic import write_synthetic_opensdi
    from dataset_adapters.vocabulary import KNOWN_GENERATORS
    from imdlbenco_maskclip.checkpoints.layout import TrainingState, write
    from imdlbenco_maskclip.model import MaskCLIP

    write_synthetic_opensdi(
        folder / "test", KNOWN_GENERATORS, n_per_class=DEMO_TEST_PER_CLASS, image_size=DEMO_IMAGE_SIZE, seed=1
    )
    torch.manual_seed(0)
    checkpoint = folder / "untrained.pth"
    write(
        TrainingState(
            MaskCLIP(setting="tiny").state_dict(),
            "MaskCLIP",
            {"setting": "tiny"},
            {"image_size": DEMO_IMAGE_SIZE, "if_padding": False},
        ),
        checkpoint,
    )
    return checkpoint, folder / "test"


def benco_test(checkpoint: Path, data: Path, output: Path, resamples: int) -> tuple[float, float]:
    """Seconds for one ``benco test`` with ``--bootstrap resamples`` (its output swallowed), and
    of those the seconds spent on the intervals and fingerprints (``test_run.recorded_result``)."""
    from imdlbenco_maskclip.cli import benco
    from imdlbenco_maskclip.evaluation import test_run

    spent = []
    original = test_run.recorded_result

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - start)

    argv = [
        "test",
        "--checkpoint",
        str(checkpoint),
        "--test_data_path",
        str(data),
        "--image_size",
        str(DEMO_IMAGE_SIZE),
        "--num_workers",
        "0",
        "--device",
        "cpu",
        "--bootstrap",
        str(resamples),
        "--output_dir",
        str(output),
    ]
    start = time.perf_counter()
    test_run.recorded_result = timed
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert benco.main(argv) == 0
    finally:
        test_run.recorded_result = original
    return time.perf_counter() - start, sum(spent)


def bootstrap_at_scale(resamples: int) -> float:
    """Seconds for the intervals of 5 splits of 20,000 images (10,000 real, 10,000 fake, 5,000
    partial fakes) with crafted figures (``tests/support/crafted_records``)."""
    from imdlbenco_maskclip.evaluation import bootstrap
    from tests.support.crafted_records import crafted_result

    result = crafted_result(dict.fromkeys(("sd15", "sd2", "sdxl", "sd3", "flux"), 10_000), seed=0)
    start = time.perf_counter()
    bootstrap.with_intervals(result, bootstrap.Settings(resamples, 0))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--demo", type=Path, default=None, help="a folder benco demo wrote (default: untrained)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bootstrap-cost-") as folder:
        checkpoint, data = demo_inputs(args.demo, Path(folder))
        benco_test(checkpoint, data, Path(folder) / "warm-up", 0)  # imports, caches
        times: dict[int, list[float]] = {0: [], args.resamples: []}
        shares = []
        for round_ in range(args.rounds):
            for resamples in list(times)[:: 1 if round_ % 2 == 0 else -1]:  # each first in turn
                total, spent = benco_test(checkpoint, data, Path(folder) / f"{round_}-{resamples}", resamples)
                times[resamples].append(total)
                if resamples:
                    shares.append(spent / (total - spent))
    without, with_ = (statistics.median(times[k]) for k in times)
    from benchmarks.model_step import machine_name

    print(
        f"{machine_name()}, Python {platform.python_version()}, "
        f"median of {args.rounds}; {'the demo at ' + str(args.demo) if args.demo else 'an untrained tiny MaskCLIP'} "
        f"on the demo's 5 test splits ({DEMO_IMAGE_SIZE} px)"
    )
    print(f"benco test --bootstrap 0    {without:8.2f} s  (each run: {', '.join(f'{t:.1f}' for t in times[0])})")
    print(
        f"benco test --bootstrap {args.resamples} {with_:8.2f} s  {with_ / without:6.3f}x "
        f"(each run: {', '.join(f'{t:.1f}' for t in times[args.resamples])})"
    )
    print(
        f"inside those runs: intervals and fingerprints add {100 * statistics.median(shares):.1f}% "
        f"(median; {100 * min(shares):.1f}-{100 * max(shares):.1f}%) to the rest of the run (target <= 10%)"
    )
    scale = bootstrap_at_scale(args.resamples)
    print(f"bootstrap alone, 5 splits x 20,000 images, {args.resamples} resamples: {scale:.1f} s")


if __name__ == "__main__":
    main()
