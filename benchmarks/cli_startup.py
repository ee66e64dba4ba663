"""How long ``benco --help`` takes next to ``python -c "import IMDLBenCo"``, in one run.

Each command runs in a fresh interpreter, alternately, ``--rounds`` times; the medians and their
ratio are printed (target: the help at most a third of IMDLBenCo's import).

    python benchmarks/cli_startup.py --rounds 7
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "benco --help": [sys.executable, "-m", "imdlbenco_maskclip", "--help"],
    "benco train --help": [sys.executable, "-m", "imdlbenco_maskclip", "train", "--help"],
    'python -c "import IMDLBenCo"': [sys.executable, "-W", "ignore", "-c", "import IMDLBenCo"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.rounds):
        for name, command in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, cwd=Path(__file__).resolve().parent.parent)
            times[name].append(time.perf_counter() - start)
    reference = statistics.median(times['python -c "import IMDLBenCo"'])
    print(
        f"{platform.node()}, {platform.processor() or platform.machine()}, Python {platform.python_version()}, median of {args.rounds}"
    )
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:32}{median:8.2f} s  {median / reference:6.2f}x of importing IMDLBenCo")


if __name__ == "__main__":
    main()
