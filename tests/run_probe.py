"""``python tests/run_probe.py ARGS``: ``benco ARGS`` with the probe models registered (for torchrun)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import probe_models  # noqa: E402,F401  (registers AmpProbe and NaNProbe)

from imdlbenco_maskclip import cli  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(cli.main(sys.argv[1:]))
