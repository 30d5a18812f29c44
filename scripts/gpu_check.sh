#!/usr/bin/env bash
# The GPU check (docs/gpu.md): on a machine with one CUDA GPU, in under 8 minutes, a table of both stages'
# training throughput fp32 vs bf16 and peak memory (paper preset, batch 48), the K-scaling ratio on the GPU, a Ray
# Train run with use_gpu (NCCL) and the synthetic renderer on the GPU's EGL (benchmarks/gpu_check.py).
# Exit status: 0 all passed, 1 a check failed (named in the table), 3 no CUDA device (nothing checked).
# `scripts/gpu_check.sh --smoke` runs the same code on a CPU-only machine at tiny sizes, to test the script.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python benchmarks/gpu_check.py "$@"
