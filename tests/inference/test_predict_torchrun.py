"""``benco predict`` under torchrun on CPU (gloo): one process or two give the same predictions of
a mix of shards and image files, and a killed parquet run resumed with another number of
processes, launched as on two machines, gives every input exactly once."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from imdlbenco_maskclip.inference import prediction_parts

pytestmark = pytest.mark.slow  # torchrun

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def torchrun(processes: int, program: list[str], *argv: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    done = subprocess.run([*command, *program, *argv], capture_output=True, text=True, env=ENV, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def torchrun_on_two_machines(logs: Path, program: list[str], *argv: str) -> str:
    """The README's several-machines command, as two machines of one process each would run it:
    two launchers meeting at one c10d rendezvous endpoint (here on this machine). Their output,
    through files under ``logs`` (a full pipe of one would stall both)."""
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    rendezvous = ["--nnodes", "2", "--nproc_per_node", "1", "--rdzv_id", "predict-test", "--rdzv_backend", "c10d"]
    command = [sys.executable, "-m", "torch.distributed.run", *rendezvous, "--rdzv_endpoint", f"localhost:{port}"]
    logs.mkdir()
    files = [logs / f"machine{n}.log" for n in range(2)]
    with contextlib.ExitStack() as stack:
        launchers = [
            subprocess.Popen(
                [*command, *program, *argv],
                stdout=stack.enter_context(open(file, "w")),
                stderr=subprocess.STDOUT,
                env=ENV,
            )
            for file in files
        ]
        try:
            for launcher in launchers:
                launcher.wait(timeout=600)
        finally:  # one that failed leaves the other waiting for it
            for launcher in launchers:
                if launcher.poll() is None:
                    launcher.kill()
    outputs = [file.read_text() for file in files]
    for launcher, output in zip(launchers, outputs):
        assert launcher.returncode == 0, output[-3000:]
    return "".join(outputs)


@pytest.fixture(scope="module")
def job(opensdi_root, tiny_checkpoint, tmp_path_factory) -> list[str]:
    """``predict`` flags for 40 rows of sd15 and sd2 (four shards, row groups of 5) and a folder of
    six photos and a file that is not one."""
    photos = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(1)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (30 + 9 * i, 70 - 6 * i, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    shards = sorted(str(p) for g in ("sd15", "sd2") for p in (opensdi_root / "data").glob(f"{g}-*.parquet"))
    return ["predict", "--checkpoint", str(tiny_checkpoint), *shards, str(photos), "--device", "cpu", "--amp", "off"]


def parquet_rows(output: Path) -> list[dict]:
    return [
        row
        for part in prediction_parts.complete_parts(output / "predictions")
        for row in pq.read_table(part).to_pylist()
    ]


def assert_same_predictions(rows: list[dict], reference: list[dict]) -> None:
    """The same inputs, each once; probabilities within 1e-5, masks within 1/255."""
    by_input = {(r["source"], r["key"]): r for r in rows}
    assert len(by_input) == len(rows) and by_input.keys() == {(r["source"], r["key"]) for r in reference}
    for expected in reference:
        row = by_input[(expected["source"], expected["key"])]
        assert (row["width"], row["height"], row["error"]) == (expected["width"], expected["height"], expected["error"])
        if expected["error"] is None:
            assert row["fake_probability"] == pytest.approx(expected["fake_probability"], abs=1e-5)
            mask = np.asarray(Image.open(io.BytesIO(row["mask"]["bytes"])), dtype=int)
            assert np.abs(mask - np.asarray(Image.open(io.BytesIO(expected["mask"]["bytes"])), dtype=int)).max() <= 1


@pytest.fixture(scope="module")
def one_process(job, tmp_path_factory) -> list[dict]:
    """The job in one process without workers (so its rows are in the inputs' order), started
    through the ``benco`` entry under torchrun."""
    output = tmp_path_factory.mktemp("one")
    benco = Path(sys.executable).with_name("benco")
    options = ["--format", "parquet", "--part_size", "6", "--num_workers", "0", "--output_dir", str(output)]
    torchrun(1, [str(benco)], *job, *options)
    return parquet_rows(output)


def test_one_and_two_processes_predict_the_same(job, one_process, tmp_path):
    assert len(one_process) == 47 and sum(r["error"] is not None for r in one_process) == 1
    program = ["-m", "imdlbenco_maskclip"]
    two = tmp_path / "two"
    done = torchrun(2, program, *job, "--format", "parquet", "--num_workers", "2", "--output_dir", str(two))
    assert "46 images predicted, 1 skipped by 2 processes" in done.stdout
    assert {p.name for p in (two / "predictions").iterdir()} == {"part-00000-00000.parquet", "part-00001-00000.parquet"}
    assert_same_predictions(parquet_rows(two), one_process)

    files = tmp_path / "files"
    torchrun(2, program, *job, "--batch_size", "3", "--output_dir", str(files))
    with open(files / "predictions.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert sorted(p.name for p in files.iterdir()) == ["masks", "overlays", "predictions.csv", "predictions.json"]
    # merged in the inputs' order, which is the one-process run's order (it has no workers)
    assert [(r["source"], r["name"]) for r in table] == [(r["source"], r["key"]) for r in one_process]
    for row, expected in zip(table, one_process):
        if expected["error"] is None:
            assert float(row["fake_probability"]) == pytest.approx(expected["fake_probability"], abs=1e-5)
            mask = np.asarray(Image.open(files / row["mask"]), dtype=int)
            assert np.abs(mask - np.asarray(Image.open(io.BytesIO(expected["mask"]["bytes"])), dtype=int)).max() <= 1
    assert len(list((files / "masks").iterdir())) == len(list((files / "overlays").iterdir())) == 46


def test_a_killed_run_resumed_on_two_machines_predicts_each_input_once(job, one_process, tmp_path):
    command = [sys.executable, "-m", "imdlbenco_maskclip", *job, "--format", "parquet", "--output_dir", str(tmp_path)]
    killed = subprocess.Popen(
        [*command, "--part_size", "2", "--batch_size", "1", "--num_workers", "1"],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    folder = tmp_path / "predictions"
    deadline = time.monotonic() + 300
    while len(prediction_parts.complete_parts(folder)) < 3 and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert killed.poll() is None, "the run ended before it could be killed"
    os.killpg(killed.pid, signal.SIGKILL)  # the process and its DataLoader worker, as an out-of-memory kill would
    killed.wait()
    before = parquet_rows(tmp_path)
    assert 6 <= len(before) < 47

    resumed = torchrun_on_two_machines(
        tmp_path / "logs",
        ["-m", "imdlbenco_maskclip"],
        *job,
        "--format",
        "parquet",
        "--resume",
        "--output_dir",
        str(tmp_path),
    )
    assert f"{len(before)} predicted before (--resume) by 2 processes" in resumed
    assert not prediction_parts.temporaries(folder)
    assert_same_predictions(parquet_rows(tmp_path), one_process)
