"""``benco serve`` under load: concurrent ``gradio_client`` clients on loopback, bounded in count and time.

Writes a checkpoint of a setting with random weights (``paper`` at 512 px by default; ``tiny``
at 64 px for a quick run), starts ``benco serve`` on it in its own process on 127.0.0.1, and
sends ``--requests`` requests from ``--clients`` concurrent clients (one session each). The
requests cycle through real photos of several sizes (scikit-image's astronaut, coffee,
chelsea, rocket, camera and logo, and coffee enlarged to 4000 px) and, one in ten, a bad file
(not an image, a truncated JPEG, a 400-megapixel PNG decompression bomb). A client that gets
the busy answer (queue full) sends the same request again shortly after. Before the load,
``--single`` requests one at a time give the single-request latency. No request is sent after
``--time_limit`` seconds (default an hour); one without its answer by then counts as unanswered.

It prints p50/p95 latency, requests/s, every distinct answer to a bad file, the busy answers
(queue full) and their latency, the server's RSS before any request, after the first ten and
at the end, and checks the targets: every good request answered with pictures at display size,
every bad one with a message, RSS at the end <= 1.1x RSS after the first ten requests, and p95
latency <= (``--max_queue`` + 1) x the single-request latency. Exit status 1 when one fails.

    python benchmarks/serve_load.py                                   # paper, 200 requests, 8 clients, queue 16
    python benchmarks/serve_load.py --setting tiny --requests 40 --clients 4 --max_queue 2 --json out.json

On a 2-core machine the clients share the cores with the server; the latencies include their
uploads and downloads.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SIZES = {"paper": 512, "tiny": 64}
BAD_EVERY = 10
START_TIMEOUT = 300.0
TIME_LIMIT = 3600.0
RETRY_PAUSE = 0.2


@dataclass
class Outcome:
    """One request: which file, how long until the answer, and the answer."""

    file: str
    seconds: float
    kind: str  # "answered", "message" (an error shown on the page), "busy" (queue full), "wrong"
    detail: str = ""


def write_photos(folder: Path) -> dict[str, tuple[int, int]]:
    """Real photos of several sizes and modes; name -> (width, height)."""
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    pictures = {
        "astronaut.jpg": Image.fromarray(data.astronaut()),
        "coffee.jpg": Image.fromarray(data.coffee()),
        "chelsea.png": Image.fromarray(data.chelsea()),
        "rocket.jpg": Image.fromarray(data.rocket()),
        "camera.png": Image.fromarray(data.camera()),
        "logo.png": Image.fromarray(data.logo()),
    }
    pictures["coffee_4000.jpg"] = pictures["coffee.jpg"].resize((4000, 2667), Image.BICUBIC)
    for name, picture in pictures.items():
        picture.save(folder / name, **({"quality": 90} if name.endswith(".jpg") else {}))
    return {name: picture.size for name, picture in pictures.items()}


def write_bad_files(folder: Path) -> list[str]:
    """A text file named .jpg, a JPEG cut in half and a PNG that decodes to 400 megapixels."""
    from PIL import Image

    (folder / "notes.jpg").write_text("not a picture\n")
    whole = io.BytesIO()
    Image.open(folder / "astronaut.jpg").save(whole, format="JPEG", quality=90)
    (folder / "truncated.jpg").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    Image.new("1", (20_000, 20_000)).save(folder / "bomb.png")  # 400 MP of zeros in a few hundred kB
    return ["notes.jpg", "truncated.jpg", "bomb.png"]


def write_checkpoint(setting: str, path: Path) -> Path:
    """A checkpoint of ``setting`` with random weights (frozen CLIP included: nothing to download)."""
    from benchmarks.predict_throughput import write_checkpoint as write_random

    if not path.exists():
        write_random(setting, SIZES[setting], path)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def start_server(checkpoint: Path, max_queue: int, workdir: Path) -> tuple[subprocess.Popen, str]:
    """``benco serve`` in its own process; returns it and its address once it answers."""
    port = free_port()
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        GRADIO_ANALYTICS_ENABLED="False",
        GRADIO_TEMP_DIR=str(workdir / "gradio_server"),
    )
    command = [sys.executable, "-m", "imdlbenco_maskclip", "serve", "--checkpoint", str(checkpoint)]
    command += ["--port", str(port), "--max_queue", str(max_queue), "--device", "cpu"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    started = time.monotonic()
    assert server.stdout is not None
    for line in server.stdout:
        lines.append(line)
        if "page at http://" in line:
            threading.Thread(target=drain, args=(server.stdout,), daemon=True).start()
            return server, line.split("page at ", 1)[1].split()[0]
        if time.monotonic() - started > START_TIMEOUT:
            break
    stop_server(server)
    raise SystemExit("benco serve did not start:\n" + "".join(lines[-40:]))


def drain(stream: io.TextIOBase) -> None:
    """Read the server's output to the end, so that a full pipe never blocks it."""
    for _ in stream:
        pass


def stop_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def request(client, folder: Path, name: str, shown: dict[str, tuple[int, int]]) -> Outcome:
    """One /predict call, its time and what came back; a good photo must come back as an overlay
    and a mask at display size with both probabilities."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError
    from gradio_client.utils import QueueError
    from PIL import Image

    start = time.perf_counter()
    try:
        overlay, mask, label = client.predict(handle_file(str(folder / name)), 0.5, api_name="/predict")
    except QueueError as error:
        return Outcome(name, time.perf_counter() - start, "busy", str(error))
    except AppError as error:
        return Outcome(name, time.perf_counter() - start, "message", str(error))
    seconds = time.perf_counter() - start
    if name not in shown:
        return Outcome(name, seconds, "wrong", "a bad file was answered with pictures")
    sizes = {Image.open(overlay).size, Image.open(mask).size}
    probabilities = {c["label"]: c["confidence"] for c in (label or {}).get("confidences", [])}
    if sizes != {shown[name]} or set(probabilities) != {"fake", "real"}:
        return Outcome(name, seconds, "wrong", f"pictures {sorted(sizes)}, expected {shown[name]}; label {label}")
    return Outcome(name, seconds, "answered")


def connect(url: str, downloads: Path) -> Any:
    """A ``gradio_client`` client: one session, as one visitor's page."""
    from gradio_client import Client

    return Client(url, verbose=False, download_files=str(downloads), analytics_enabled=False)


def run_load(
    clients: list, folder: Path, plan: list[str], shown: dict, deadline: float
) -> tuple[list[Outcome], list[Outcome]]:
    """``plan`` sent by the ``clients`` at once, each taking the next request when it has its
    answer; a busy answer is noted and the request sent again after ``RETRY_PAUSE``, as a
    person would. Nothing is sent after ``deadline`` (``time.monotonic``); a request without
    its answer by then counts as unanswered. Returns the final outcome of each request of the
    plan, and the busy answers."""
    outcomes: list[Outcome | None] = [None] * len(plan)
    busy: list[Outcome] = []
    counter = itertools.count()
    lock = threading.Lock()

    def work(client: Any) -> None:
        while time.monotonic() < deadline:
            with lock:
                position = next(counter)
            if position >= len(plan):
                return
            outcome = request(client, folder, plan[position], shown)
            while outcome.kind == "busy" and time.monotonic() < deadline:
                busy.append(outcome)
                time.sleep(RETRY_PAUSE)
                outcome = request(client, folder, plan[position], shown)
            outcomes[position] = outcome
            with lock:
                done = sum(o is not None for o in outcomes)
            if done % 20 == 0 or done == len(plan):
                print(f"{done}/{len(plan)} requests answered", file=sys.stderr, flush=True)

    # daemon threads: a request still waiting at the deadline does not keep the process alive
    threads = [threading.Thread(target=work, args=(client,), daemon=True) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    final = [
        o if o is not None else Outcome(name, float("nan"), "wrong", "no answer before the time limit")
        for o, name in zip(outcomes, plan)
    ]
    return final, busy


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", choices=sorted(SIZES), default="paper")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max_queue", type=int, default=16)
    parser.add_argument("--single", type=int, default=3, help="requests one at a time for the single-request latency")
    parser.add_argument(
        "--time_limit", type=float, default=TIME_LIMIT, help="seconds for all the requests; none is sent after it"
    )
    parser.add_argument("--workdir", type=Path, help="where photos and the checkpoint go (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    from imdlbenco_maskclip.inference.predictor import fit_inside
    from imdlbenco_maskclip.inference.web_page import DISPLAY_SIDE

    with tempfile.TemporaryDirectory(prefix="serve-load-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        folder = workdir / "photos"
        sizes = write_photos(folder)
        shown = {name: fit_inside(size, DISPLAY_SIDE) for name, size in sizes.items()}
        bad = write_bad_files(folder)
        checkpoint = write_checkpoint(args.setting, workdir / f"{args.setting}_random.pth")
        good = list(sizes)
        plan = [
            bad[(i // BAD_EVERY) % len(bad)] if i % BAD_EVERY == BAD_EVERY - 1 else good[i % len(good)]
            for i in range(args.requests)
        ]
        print(f"starting benco serve on a {args.setting} checkpoint", file=sys.stderr, flush=True)
        server, url = start_server(checkpoint, args.max_queue, workdir)
        try:
            rss = {"before": rss_mb(server.pid)}
            clients = [connect(url, workdir / "downloads" / str(i)) for i in range(args.clients)]
            request(clients[0], folder, "astronaut.jpg", shown)  # warm-up
            single = [request(clients[0], folder, "astronaut.jpg", shown) for _ in range(args.single)]
            single_s = statistics.median(o.seconds for o in single)
            deadline = time.monotonic() + args.time_limit
            first, busy = run_load(clients, folder, plan[:10], shown, deadline)
            rss["after 10"] = rss_mb(server.pid)
            start = time.perf_counter()
            rest, busy_later = run_load(clients, folder, plan[10:], shown, deadline)
            seconds = time.perf_counter() - start
            rss["end"] = rss_mb(server.pid)
        finally:
            stop_server(server)
    outcomes = first + rest
    answered = [o.seconds for o in outcomes if o.kind == "answered"]
    busy += busy_later
    sent = {o.file for o in outcomes}
    messages = {name: sorted({o.detail for o in outcomes if o.file == name}) for name in bad if name in sent}
    results = {
        "machine": f"{platform.node()} ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs)",
        "setting": args.setting,
        "requests": args.requests,
        "clients": args.clients,
        "max_queue": args.max_queue,
        "single_s": single_s,
        "p50_s": statistics.median(answered) if answered else None,
        "p95_s": percentile(answered, 0.95) if answered else None,
        "requests_per_s": sum(o.kind in ("answered", "message") for o in rest) / seconds,
        "rss_mb": rss,
        "bad_answers": messages,
        "busy": len(busy),
        "busy_max_s": max((o.seconds for o in busy), default=None),
        "outcomes": [asdict(o) for o in outcomes],
        "busy_answers": [asdict(o) for o in busy],
    }
    targets = {
        "every good request answered": all(o.kind == "answered" for o in outcomes if o.file in sizes),
        "every bad file answered with a message": all(o.kind == "message" for o in outcomes if o.file in bad),
        "RSS at the end <= 1.1x RSS after 10 requests": rss["end"] <= 1.1 * rss["after 10"],
        "p95 <= (max_queue + 1) x single": bool(answered) and results["p95_s"] <= (args.max_queue + 1) * single_s,
    }
    results["targets"] = targets
    print(f"\nbenco serve under load: setting {args.setting}, machine {results['machine']}")
    print(
        f"{args.requests} requests ({sum(o.file in bad for o in outcomes)} bad files) from {args.clients} clients, "
        f"--max_queue {args.max_queue}"
    )
    print(f"single request (astronaut, 512 px): {single_s:.3f} s, median of {args.single}")
    if answered:
        print(
            f"latency of answered requests: p50 {results['p50_s']:.3f} s, p95 {results['p95_s']:.3f} s "
            f"({results['p95_s'] / single_s:.1f}x single)"
        )
    print(f"throughput after the first ten: {results['requests_per_s']:.2f} requests/s answered")
    busy_line = f", answered within {results['busy_max_s']:.3f} s" if busy else ""
    print(f"busy answers (queue full; each request sent again until answered): {len(busy)}{busy_line}")
    for name, answers in messages.items():
        print(f"answers to {name}: {' | '.join(answers)}")
    print("server RSS: " + ", ".join(f"{k} {v:.0f} MB" for k, v in rss.items()))
    for target, met in targets.items():
        print(f"{'met   ' if met else 'MISSED'} {target}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(targets.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
