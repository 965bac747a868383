#!/usr/bin/env bash
# Build gradeclip._native in place (python/gradeclip/_native.abi3.so), exactly where an editable
# install (`pip install -e .`) puts it. For working from a second checkout (a git worktree) with
# PYTHONPATH=python, without touching the environment's installed copy.
set -euo pipefail
cd "$(dirname "$0")/.."
PYO3_BUILD_EXTENSION_MODULE=1 cargo build --release --lib
cp target/release/lib_native.so python/gradeclip/_native.abi3.so
