#!/usr/bin/env bash
# Wheels that benchmarks/gpu_check.py needs besides torch, triton and numpy, for a GPU machine without network.
#
# The library imports jaxtyping (which needs wadler-lindig), regex and tqdm at module level; step (a) runs pytest.
# Most CUDA images already hold them: check there first with
#     python3 -c "import jaxtyping, regex, tqdm, pytest"
# Where that fails, run this script here (with network) in the repository root; it fills .whl/ (ignored by git)
# with wheels for CPython 3.12 on x86-64 Linux (override with PY_VERSION=3.11 etc.). Then, on the GPU machine:
#     python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
#     python3 benchmarks/gpu_check.py --out gpu_results
set -euo pipefail
cd "$(dirname "$0")/.."
PY_VERSION="${PY_VERSION:-3.12}"
exclude="$(git rev-parse --git-common-dir)/info/exclude"  # keep .whl/ out of git (also in a worktree)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
platforms=(manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)
args=(--no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp -d .whl)
for p in "${platforms[@]}"; do args+=(--platform "$p"); done
# Versions as in uv.lock; the pure-Python ones fit any Python 3.
python3 -m pip download "${args[@]}" jaxtyping==0.3.11 wadler-lindig==0.1.8 tqdm==4.70.1 regex==2026.11.15
ls -l .whl
