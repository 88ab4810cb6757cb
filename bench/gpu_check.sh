#!/usr/bin/env bash
# One NVIDIA GPU, no network: each runner (meta, hf, nemo) and a bare loop on a ~1B-parameter Llama-shaped model,
# 50 steps in bf16 on local storage, one save and one resume per runner; prints one table of tokens/s and MFU.
# Not part of `make test` (tests/bench/test_gpu_check.py runs its --dry-run CPU path). See bench/_gpu_check.py.
#
#   bench/gpu_check.sh [--wheels DIR] [--dry-run] [--steps N] [--work DIR] [--json FILE]
#   bench/gpu_check.sh --fetch-wheels DIR     (where there is a network: the wheels the GPU machine lacks)
#
# --wheels DIR: install the wheels in DIR (no index, no dependencies) into a scratch folder put first on PYTHONPATH,
# e.g. `datasets` and its pure-Python needs, which the GPU machine does not have. Run from anywhere; PYTHON picks the
# interpreter (default: python3, the one holding the machine's CUDA torch).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
# What the trainer's data pipeline needs beyond that machine's image (it has pyarrow, xxhash, filelock, fsspec,
# pandas, huggingface-hub): pinned like trainer/requirements.txt pins datasets.
WHEELS_NEEDED=("datasets==5.2.0" "dill==0.4.1" "multiprocess==0.70.19")

if [[ "${1:-}" == "--fetch-wheels" ]]; then
  dest="${2:?--fetch-wheels DIR}"
  "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any -d "$dest" "${WHEELS_NEEDED[@]}"
  exit 0
fi

args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --wheels)
      site="$(mktemp -d)/site"
      "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$2"/*.whl
      export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
      shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
exec "$PYTHON" -m bench._gpu_check "${args[@]}"
