#!/usr/bin/env bash
# One-shot GPU check for a lent machine: AMP (bf16, fp16) steps of the training loop, 1-GPU DDP on nccl,
# faiss on GPU when installed, ViT-B/16-shaped student throughput + model FLOP utilisation with a cached teacher.
# Figures go to benchmarks/out/gpu_check.{json,md}. Exits 2 ("no GPU") without CUDA; 1 when a check fails.
#   benchmarks/gpu_check.sh                  # on the GPU machine, from the repository root
#   benchmarks/gpu_check.sh --cpu-dry-run    # toy sizes on CPU: tests the script, reports no GPU figures
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-$here/../.venv/bin/python}"
[ -x "$py" ] || py="$(command -v python3)"
exec "$py" "$here/gpu_check.py" "$@"
