#!/usr/bin/env bash
# The fused map kernel's GPU check in one command (benches/gpu_check.py: tests compiled on the GPU,
# kernel vs PyTorch vs memory floor, explain_image vs encode_image). Needs an NVIDIA GPU, PyTorch
# and Triton; no network. Wheels of missing packages (open_clip_torch, ftfy, wcwidth) found in .whl/
# are installed to /tmp/site first (docs/kernels.md says how to fetch them).
# Usage: scripts/gpu_check.sh [OUT_DIR] [--sweep] [--skip tests,e2e]   (OUT_DIR defaults to $OUT, else benches/out)
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"
if compgen -G ".whl/*.whl" >/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${1:-${OUT:-benches/out}}"
[ $# -gt 0 ] && shift
exec "$py" benches/gpu_check.py "$out" "$@"
