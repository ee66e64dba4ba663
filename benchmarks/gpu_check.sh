#!/usr/bin/env bash
# One-shot GPU check for imdlbenco-maskclip (about 6-9 minutes on one H100/H200):
#   1. the model tests on CUDA (tiny setting: Benco's train/test loops, bf16 and fp16
#      autocast, SDPA side attention against segment-anything's, exact fast paths) and the
#      training-run tests, which include resuming a CPU checkpoint on CUDA and the reverse;
#   2. a short `benco train` of the tiny setting on CUDA with --amp bf16 on synthetic shards,
#      and the dtype its log.txt and checkpoint record;
#   3. the GPU part of benchmarks/model_step.py: the paper setting at batch 16, 32 and 64,
#      fp32 published-like vs bf16, without and with activation checkpointing: training
#      images/s and peak memory per image.
# Usage: bash benchmarks/gpu_check.sh            (PYTHON=/path/to/python to pick the interpreter;
#        OUT=dir keeps the JSON figures and the train run)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
OUT="${OUT:-/tmp/maskclip_gpu_check}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONWARNINGS=ignore

"$PYTHON" - <<'PY'
import datetime, platform, torch
assert torch.cuda.is_available(), "gpu_check: no CUDA device visible"
print(f"{datetime.date.today()} {platform.node()}: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
PY

echo "== model tests on CUDA, and a checkpoint written on CPU resuming on CUDA and the reverse"
MASKCLIP_TEST_DEVICE=cuda timeout 300 "$PYTHON" -m pytest -q -p no:cacheprovider \
    tests/model/test_tiny_setting.py tests/model/test_parts.py tests/model/test_side_vit.py tests/model/test_benco_contract.py
timeout 180 "$PYTHON" -m pytest -q -p no:cacheprovider tests/training/test_runs.py -k cuda

echo "== benco train, tiny setting, CUDA, --amp bf16"
"$PYTHON" -c "from dataset_adapters.synthetic import write_synthetic_opensdi as w; w('$OUT/shards', generators=('sd15',), n_per_class=8, image_size=64, seed=0)"
timeout 180 "$PYTHON" -m imdlbenco_maskclip train --model MaskCLIP --setting tiny --data_path "$OUT/shards" \
    --image_size 64 --batch_size 8 --epochs 2 --amp bf16 --device cuda --num_workers 0 --output_dir "$OUT/train_bf16"
"$PYTHON" - "$OUT/train_bf16" <<'PY'
import json, sys, pathlib
run = pathlib.Path(sys.argv[1])
lines = [json.loads(l) for l in (run / "log.txt").read_text().splitlines() if l.strip()]
precisions = {line.get("precision") for line in lines}
print("log.txt records precision:", precisions)
assert precisions == {"bfloat16"}, "log.txt does not record bf16"
PY

echo "== GPU benchmark (paper setting)"
timeout 420 "$PYTHON" benchmarks/model_step.py --part gpu --batches ${BATCHES:-16 32 64} --gpu-steps "${STEPS:-6}" --json "$OUT/maskclip_gpu_check.json"
