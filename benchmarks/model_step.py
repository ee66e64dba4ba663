"""Cost of one MaskCLIP training step and one eval forward, in machine-independent units.

CPU (always): the paper setting with random weights, batch 1 at 512. Train step = forward and
backward, then again with torch's default AdamW step added; eval = forward under
``torch.no_grad`` in eval mode. Each time is divided by the time of one open_clip ViT-L-14
image forward at 224 (no_grad), measured in the same process and interleaved with the steps,
so the ratio stays meaningful on a busy or different machine (median over rounds; the ratio
of the minima is printed too). Peak memory is the peak RSS (``ru_maxrss``) of a fresh process
per mode, so the peaks are honest and independent. The process itself (torch, torchvision,
open_clip, IMDLBenCo imported) holds about 1.2 GB before the model is built.

Inference (CPU part, one more process, each step interleaved with the unit): the eval forward
in fp32, the same under bf16 autocast (as a ratio to fp32), and ``Predictor.predict`` of one
512-px JPEG (scikit-image's astronaut) with default settings (``--amp auto``: bf16 where the
CPU computes it natively), as a share of the published code's fp32 eval forward (goal <= 0.5).

GPU (when CUDA is available, or ``--part gpu``): the paper setting at batch 16, 32 and 64:
training images/s and peak memory per training image for the published-like run (fp32, the
text tower over all 77 positions, attention restricted to SDPA's unfused math kernel, which
computes softmax(QK^T) explicitly as the published code does) and for ours (bf16 autocast),
without and with activation checkpointing of the side ViT (``grad_checkpointing``); eval
images/s at the first batch. Targets on an H100/H200: bf16 >= 2x the fp32 published-like
images/s in the same run; <= 1.2 GB peak per training image at batch 64 (the paper's global
batch on one 80 GB card).

    python benchmarks/model_step.py                 # CPU part, and GPU part when CUDA is present
    python benchmarks/model_step.py --part cpu --rounds 7
    python benchmarks/model_step.py --part gpu --batches 16 32 64

Published code on a 2-core CPU: 9.1 units per train step, 3.6 per eval forward, 7.1 GB peak
RSS. Targets: <= 6.5, <= 2.8, <= 5 GB; ``Predictor.predict`` <= 0.5 x 3.6 units.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CPU_TARGETS = {"train": 6.5, "eval": 2.8, "rss_gb": 5.0, "predict_share": 0.5}
PUBLISHED_CPU = {"train": 9.1, "eval": 3.6, "rss_gb": 7.1}


def machine_name() -> str:
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return f"{platform.node()} ({cpu}, {torch.get_num_threads()} threads, torch {torch.__version__})"


def build(setting: str, device: str):
    import torch

    from imdlbenco_maskclip.model import MaskCLIP

    torch.manual_seed(0)
    model = MaskCLIP(setting).to(device)
    return model


def batch(size: int, count: int, device: str) -> dict:
    import torch

    generator = torch.Generator().manual_seed(0)
    mask = (torch.rand(count, 1, size, size, generator=generator) > 0.7).float()
    return {
        "image": torch.randn(count, 3, size, size, generator=generator).to(device),
        "mask": mask.to(device),
        "label": torch.ones(count, dtype=torch.long, device=device),
        "edge_mask": mask.to(device),
    }


def unit_forward(model, device: str):
    """One open_clip ViT-L-14 image forward at 224: the model's own CLIP tower when it is
    ViT-L-14 (the paper setting), else a separate one."""
    import open_clip
    import torch

    visual = model.clip.model.visual
    if (
        tuple(visual.image_size) != (224, 224)
        or visual.transformer.width != 1024
        or len(visual.transformer.resblocks) != 24
    ):
        visual = open_clip.create_model("ViT-L-14").visual.to(device).eval()
    image = torch.randn(1, 3, 224, 224, device=device)

    def run() -> None:
        with torch.no_grad():
            visual(image)

    return run


def cpu_worker(mode: str, setting: str, size: int, rounds: int) -> dict:
    """Runs in a fresh process: interleaved unit and step timings, and the peak RSS.

    ``train``: forward + backward; ``train+adamw``: the same plus torch's default AdamW step
    (the optimizer Benco's scripts build); ``eval``: forward in eval mode without gradient.
    """
    import torch

    model = build(setting, "cpu")
    data = batch(size, 1, "cpu")
    unit = unit_forward(model, "cpu")
    if mode.startswith("train"):
        model.train()
        optimizer = None
        if mode == "train+adamw":
            optimizer = torch.optim.AdamW(
                [p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.05
            )

        def step() -> None:
            model(**data)["backward_loss"].backward()
            if optimizer is not None:
                optimizer.step()
            model.zero_grad(set_to_none=True)

    else:
        model.eval()

        def step() -> None:
            with torch.no_grad():
                model(**data)

    for _ in range(2):  # warm-up: first-touch page faults, allocator growth, lazy inits
        step()
        unit()
    units, steps = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        unit()
        units.append(time.perf_counter() - start)
        start = time.perf_counter()
        step()
        steps.append(time.perf_counter() - start)
    return {
        "mode": mode,
        "unit_s": statistics.median(units),
        "step_s": statistics.median(steps),
        "ratio_median": statistics.median(s / u for s, u in zip(steps, units)),
        "ratio_min": min(steps) / min(units),
        "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
    }


CPU_MODES = {
    "train": "forward+backward",
    "train+adamw": "  + AdamW step",
    "eval": "eval forward",
}
INFERENCE_STEPS = {
    "eval_fp32": "eval forward, fp32",
    "eval_bf16": "eval forward, bf16 autocast",
    "predict": "Predictor.predict",
}


def inference_worker(setting: str, size: int, rounds: int) -> dict:
    """Runs in a fresh process: the fp32 and bf16 eval forwards and one ``Predictor.predict``
    of a ``size``-px JPEG with default settings, each in a block of ``rounds`` interleaved with
    the unit, after a warm-up (MaskCLIP keeps its prompt features for one precision at a time,
    so alternating precisions call by call would recompute them every time)."""
    import tempfile

    import torch
    from PIL import Image
    from skimage import data

    from imdlbenco_maskclip.inference.predictor import Predictor

    model = build(setting, "cpu").eval()
    image = batch(size, 1, "cpu")["image"]
    unit = unit_forward(model, "cpu")
    predictor = Predictor(model, image_size=size)
    photo = Path(tempfile.mkdtemp(prefix="model-step-")) / "astronaut.jpg"
    Image.fromarray(data.astronaut()).resize((size, size), Image.BICUBIC).save(photo, quality=90)

    def eval_forward(dtype) -> None:
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            model(image=image)

    steps = {
        "eval_fp32": lambda: eval_forward(None),
        "eval_bf16": lambda: eval_forward(torch.bfloat16),
        "predict": lambda: predictor.predict(photo),
    }
    unit()
    units: dict[str, list[float]] = {name: [] for name in steps}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for name, step in steps.items():
        for _ in range(2):  # warm-up
            step()
        for _ in range(rounds):
            start = time.perf_counter()
            unit()
            units[name].append(time.perf_counter() - start)
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    ratios = {name: statistics.median(t / u for t, u in zip(times[name], units[name])) for name in steps}
    return {
        "unit_s": statistics.median(u for values in units.values() for u in values),
        "predict_precision": predictor.precision,
        **{f"{name}_s": statistics.median(values) for name, values in times.items()},
        **{f"{name}_units": ratio for name, ratio in ratios.items()},
        "bf16_over_fp32": ratios["eval_bf16"] / ratios["eval_fp32"],
    }


def cpu_part(args: argparse.Namespace) -> dict:
    results = {mode: run_worker(mode, args) for mode in (*CPU_MODES, "inference")}
    print(
        f"\nCPU, setting {args.setting}, batch 1 at {args.size}, fp32, random weights, median of {args.rounds} rounds"
    )
    print(f"machine: {machine_name()}")
    units = ", ".join(f"{results[m]['unit_s']:.3f} s ({m} run)" for m in CPU_MODES)
    print(f"unit = one open_clip ViT-L-14 image forward at 224: {units}")
    print(f"{'':18}{'seconds':>9}{'units':>8}{'(min/min)':>11}{'peak RSS':>11}")
    for mode, label in CPU_MODES.items():
        r = results[mode]
        print(f"{label:18}{r['step_s']:9.3f}{r['ratio_median']:8.2f}{r['ratio_min']:11.2f}{r['rss_gb']:9.2f}GB")
    print(
        f"published code: {PUBLISHED_CPU['train']} units per train step, {PUBLISHED_CPU['eval']} per eval forward, "
        f"{PUBLISHED_CPU['rss_gb']} GB peak RSS; targets <= {CPU_TARGETS['train']}, <= {CPU_TARGETS['eval']}, "
        f"<= {CPU_TARGETS['rss_gb']} GB"
    )
    inference = results["inference"]
    print(
        f"\ninference, one process, each step in a block interleaved with the unit ({inference['unit_s']:.3f} s), "
        f"median of {args.rounds} rounds;\nPredictor.predict: a 512-px JPEG, default settings "
        f"(--amp auto: {inference['predict_precision']} on this CPU)"
    )
    print(f"{'':30}{'seconds':>9}{'units':>8}")
    for name, label in INFERENCE_STEPS.items():
        print(f"{label:30}{inference[name + '_s']:9.3f}{inference[name + '_units']:8.2f}")
    share = inference["predict_units"] / PUBLISHED_CPU["eval"]
    print(f"eval forward bf16 / fp32: {inference['bf16_over_fp32']:.2f} (ratio of their units)")
    print(
        f"Predictor.predict / published fp32 eval forward ({PUBLISHED_CPU['eval']} units): {share:.2f} "
        f"(goal <= {CPU_TARGETS['predict_share']})"
    )
    return results


def run_worker(mode: str, args: argparse.Namespace) -> dict:
    """One CPU measurement in a fresh process (its own peak RSS)."""
    command = [sys.executable, __file__, "--worker", mode, "--setting", args.setting]
    command += ["--size", str(args.size), "--rounds", str(args.rounds)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise SystemExit(f"{mode} worker failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(lines[-1])


@contextlib.contextmanager
def published_like(model):
    """Approximate the published code's costs: the text tower over all 77 positions and
    attention through SDPA's math kernel (explicit softmax of QK^T)."""
    import open_clip
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    prompts = model.prompts
    saved = prompts.tokens
    full = open_clip.get_tokenizer(model.settings.clip.tokenizer)([model.settings.prompt_template])
    prompts.tokens = full.to(saved.device)
    try:
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        prompts.tokens = saved
        torch.cuda.empty_cache()


def gpu_measure(model, data: dict, steps: int, train: bool, dtype) -> tuple[float, float]:
    """(images/s, peak GB per image above what stays resident) for training steps with AdamW
    or eval forwards, under autocast ``dtype`` (None: fp32)."""
    import torch

    count = data["image"].shape[0]
    autocast = (lambda: torch.autocast("cuda", dtype=dtype)) if dtype is not None else contextlib.nullcontext
    if train:
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.05)

        def step() -> None:
            with autocast():
                loss = model(**data)["backward_loss"]
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    else:
        model.eval()

        def step() -> None:
            with torch.no_grad(), autocast():
                model(**data)

    try:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated()
        return count * steps / elapsed, (peak - base) / count / 1e9
    except torch.cuda.OutOfMemoryError:
        return float("nan"), float("nan")
    finally:
        if train:
            del optimizer
        model.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()


GPU_MODES = (
    # (label, published-like costs, autocast dtype name, activation checkpointing)
    ("fp32 published-like", True, None, False),
    ("bf16", False, "bfloat16", False),
    ("bf16 + checkpointing", False, "bfloat16", True),
)


def gpu_part(args: argparse.Namespace) -> dict:
    import torch

    if not torch.cuda.is_available():
        print("\nGPU part skipped: CUDA is not available")
        return {}
    device = "cuda"
    name = torch.cuda.get_device_name()
    model = build(args.setting, device)
    weights_gb = torch.cuda.memory_allocated() / 1e9
    results: dict = {"device": name, "setting": args.setting, "size": args.size, "rows": []}
    print(
        f"\nGPU {name}, setting {args.setting} at {args.size}, {args.gpu_steps} timed steps; "
        f"machine: {machine_name()}; model weights on GPU {weights_gb:.2f} GB"
    )
    print(f"{'batch':>5}  {'mode':22}{'train img/s':>12}{'GB/image':>10}")
    for batch_size in args.batches:
        data = batch(args.size, batch_size, device)
        for label, published, dtype_name, checkpointing in GPU_MODES:
            model.grad_checkpointing = checkpointing
            dtype = getattr(torch, dtype_name) if dtype_name else None
            with published_like(model) if published else contextlib.nullcontext():
                speed, memory = gpu_measure(model, data, args.gpu_steps, True, dtype)
            results["rows"].append(
                {"batch": batch_size, "mode": label, "train_img_s": speed, "train_gb_per_image": memory}
            )
            print(f"{batch_size:5}  {label:22}{speed:12.1f}{memory:10.2f}", flush=True)
        del data
    model.grad_checkpointing = False
    data = batch(args.size, args.batches[0], device)
    for label, published, dtype_name, _ in GPU_MODES[:2]:
        dtype = getattr(torch, dtype_name) if dtype_name else None
        with published_like(model) if published else contextlib.nullcontext():
            results[f"eval_img_s {label}"] = gpu_measure(model, data, args.gpu_steps, False, dtype)[0]
        print(f"eval, batch {args.batches[0]}, {label}: {results[f'eval_img_s {label}']:.1f} img/s")
    for batch_size in args.batches:
        rows = {r["mode"]: r for r in results["rows"] if r["batch"] == batch_size}
        ratio = rows["bf16"]["train_img_s"] / rows["fp32 published-like"]["train_img_s"]
        best = min(r["train_gb_per_image"] for r in rows.values() if r["mode"] != "fp32 published-like")
        print(
            f"batch {batch_size}: bf16 / fp32 published-like = {ratio:.2f}x (target >= 2); "
            f"least GB/image with bf16 {best:.2f} (target at batch 64 <= 1.2)"
        )
    print("GB/image: peak allocated during a training step above what stays resident between steps (weights,")
    print("AdamW state), divided by the batch: activations and gradients. nan: out of memory.")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("all", "cpu", "gpu"), default="all")
    parser.add_argument("--setting", default="paper")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5, help="CPU: timed rounds of (unit, step) per mode")
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 32, 64], help="GPU batch sizes")
    parser.add_argument("--gpu-steps", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--worker", choices=(*CPU_MODES, "inference"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "inference":
        print(json.dumps(inference_worker(args.setting, args.size, args.rounds)))
        return
    if args.worker:
        print(json.dumps(cpu_worker(args.worker, args.setting, args.size, args.rounds)))
        return
    results = {"machine": machine_name()}
    if args.part in ("all", "cpu"):
        results["cpu"] = cpu_part(args)
    if args.part in ("all", "gpu"):
        results["gpu"] = gpu_part(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
