"""``benco serve`` under load, as ``benchmarks/serve_load.py`` drives it: a queue of 2 for 4
concurrent clients holds its bound with busy answers, every photo gets its pictures, every bad
file its message, and the server's memory stays flat."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("gradio", reason='the serve extra is not installed: pip install -e ".[serve]"')
pytest.importorskip("gradio_client", reason='the serve extra is not installed: pip install -e ".[serve]"')
pytest.importorskip("skimage", reason="the load's photos are scikit-image's (installed with IMDLBenCo)")

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # a server and 40 requests
def test_a_burst_gets_busy_answers_bad_files_messages_and_memory_stays_flat(tmp_path):
    figures = tmp_path / "serve_load.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "serve_load.py"), "--setting", "tiny", "--requests", "40"]
    command += [
        "--clients",
        "4",
        "--max_queue",
        "2",
        "--single",
        "1",
        "--workdir",
        str(tmp_path),
        "--json",
        str(figures),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert figures.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(figures.read_text())

    # 4 clients, one request each in flight, one running and at most 2 waiting: the 4th is refused at once
    assert results["busy"] > 0
    assert {b["detail"] for b in results["busy_answers"]} == {"Queue is full! Please try again."}
    outcomes = results["outcomes"]
    bad = {"notes.jpg": "not an image", "truncated.jpg": "truncated", "bomb.png": "more pixels than Pillow allows"}
    assert {o["file"] for o in outcomes} >= set(bad) and len(outcomes) == 40
    for outcome in outcomes:  # sent again after a busy answer until answered
        if outcome["file"] in bad:
            assert outcome["kind"] == "message" and bad[outcome["file"]] in outcome["detail"], outcome
        else:  # the overlay and the mask at display size, and both probabilities
            assert outcome["kind"] == "answered", outcome
    rss = results["rss_mb"]
    assert rss["end"] <= 1.1 * rss["after 10"], rss
    assert (
        results["targets"]["every good request answered"]
        and results["targets"]["every bad file answered with a message"]
    )
