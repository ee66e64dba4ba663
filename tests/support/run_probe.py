"""``python tests/support/run_probe.py [--kill-at-epoch N] ARGS``: ``benco ARGS`` in a process of its own,
with the probe models registered (for torchrun), and optionally killed with SIGKILL as epoch
N starts (after the checkpoint of epoch N-1 is on disk), as a crash or an out-of-memory kill would."""

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from imdlbenco_maskclip.cli import benco
from tests.support import probe_models  # noqa: F401  (registers AmpProbe and NaNProbe)


def kill_at_epoch(epoch: int) -> None:
    import IMDLBenCo.training_scripts.trainer as trainer

    real = trainer.train_one_epoch

    def train_one_epoch(*args, **kwargs):
        if args[4] == epoch:  # Benco's signature: (model, data_loader, optimizer, device, epoch, ...)
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    trainer.train_one_epoch = train_one_epoch


if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[:1] == ["--kill-at-epoch"]:
        kill_at_epoch(int(argv[1]))
        argv = argv[2:]
    raise SystemExit(benco.main(argv))
