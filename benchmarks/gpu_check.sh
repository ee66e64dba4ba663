#!/usr/bin/env bash
# One-shot GPU check for imdlbenco-maskclip's model (about 3-5 minutes on one H100/H200):
#   1. the model tests on CUDA (tiny setting: Benco's train/test loops with fp16 AMP, bf16 and
#      fp16 autocast, SDPA side attention against segment-anything's, exact fast paths);
#   2. the GPU part of benchmarks/model_step.py: paper setting, bf16 autocast, batch 16 at 512,
#      training images/s and memory per image, eval images/s, and a published-code-like reference.
# Usage: bash benchmarks/gpu_check.sh            (PYTHON=/path/to/python to pick the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONWARNINGS=ignore

"$PYTHON" - <<'PY'
import platform, torch
assert torch.cuda.is_available(), "gpu_check: no CUDA device visible"
print(f"machine {platform.node()}: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
PY

echo "== model tests on CUDA"
MASKCLIP_TEST_DEVICE=cuda timeout 240 "$PYTHON" -m pytest -q -p no:cacheprovider \
    tests/test_model_tiny.py tests/test_model_parts.py tests/test_model_side_vit.py tests/test_model_benco.py

echo "== GPU benchmark (paper setting)"
timeout 300 "$PYTHON" benchmarks/model_step.py --part gpu --batch "${BATCH:-16}" --gpu-steps "${STEPS:-8}" --json "${OUT:-/tmp}/maskclip_gpu_check.json"
