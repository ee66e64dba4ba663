"""Memory of loading a released MaskCLIP checkpoint: ``load_model`` against loading as before.

Writes a 3.14 GB file in the layout of the released ``MaskCLIP_sd15_*.pth`` files (published
state dict with the frozen CLIP, AdamW state for every trainable tensor, scaler, epoch, ``args``;
random values) unless ``--file`` names one, then loads it in fresh processes, each measuring
its peak RSS above its RSS before the call (``VmHWM``, reset before the call), and what it still holds after:

* ``load_model`` (memory-mapped file, MaskCLIP built on the meta device, tensors assigned);
* as before (the whole file read, optimizer included; the network built with its own weights;
  the file's copied in).

Prints the machine, the model's bytes and each peak as a ratio of them (the target for
``load_model``: at most 1.25), then the peak once a first forward (one 64 px image) has read
every weight: a memory-mapped model's pages come into memory when they are used. About 3
minutes and 7 GB of free memory on a 2-core VM::

    python benchmarks/load_memory.py [--file MaskCLIP_sd15_20241109_08_53_19.pth] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "tests.support.released_layout", *args]
    return subprocess.run(command, check=True, cwd=ROOT, env=env, capture_output=True, text=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", type=Path, help="a released-layout file to load (default: write one)")
    parser.add_argument("--rounds", type=int, default=1, help="loads of each kind, alternating")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="load-memory-") as folder:
        path = args.file or Path(folder) / "MaskCLIP_sd15_20241109_08_53_19.pth"
        if args.file is None:
            print(f"writing {path} ...", file=sys.stderr, flush=True)
            run("write", str(path), "--setting", "paper")
        results: dict[str, list[dict]] = {"load_model": [], "as before": []}
        for _ in range(args.rounds):
            for name, extra in (("load_model", []), ("as before", ["--before"])):
                print(f"loading ({name}) ...", file=sys.stderr, flush=True)
                results[name].append(json.loads(run("measure", str(path), *extra).strip().splitlines()[-1]))
        size = path.stat().st_size
    cpu = platform.processor() or platform.machine()
    print(f"{platform.node()}, {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}")
    model_bytes = results["load_model"][0]["model_bytes"]
    print(f"file {size / 1e9:.2f} GB, loaded model {model_bytes / 1e9:.2f} GB (parameters and buffers)")
    for name, rows in results.items():
        peak, held, used = (
            max(row[key] for row in rows) for key in ("peak_above_start", "held_after", "peak_with_forward")
        )
        print(
            f"{name:12} loading peaks {peak / 1e9:5.2f} GB above the start ({peak / model_bytes:.2f}x the model), "
            f"holds {held / 1e9:5.2f} GB after ({held / model_bytes:.2f}x); "
            f"with a first forward the peak is {used / 1e9:5.2f} GB ({used / model_bytes:.2f}x)"
        )
    ratio = max(r["peak_above_start"] for r in results["load_model"]) / max(
        r["peak_above_start"] for r in results["as before"]
    )
    print(f"load_model peaks at {ratio:.2f}x of loading as before")


if __name__ == "__main__":
    main()
