#!/usr/bin/env bash
# Build the CUDA runtime with `swgguf runtime build --cuda`, run the CUDA tests
# and the GPU overhead benchmark on an NVIDIA machine. Results go to $OUT.
#
#   tools/cuda_check.sh [SDIST] [WHEELS_DIR]
#
# SDIST: a local copy of the pinned llama-cpp-python sdist (for machines without
# a package index; then the build uses this environment's scikit-build-core).
# WHEELS_DIR: wheels to install first (e.g. gguf, diskcache) on such machines.
# Installs into the current Python environment (use a venv or a throwaway machine).
set -euo pipefail
OUT=${OUT:-out/cuda}
SDIST=${1:-}
WHEELS=${2:-}
mkdir -p "$OUT"
if [ -n "$WHEELS" ]; then
    export PIP_NO_INDEX=1
    python3 -m pip install -q --no-deps "$WHEELS"/*.whl
fi
python3 -m pip install -q --no-deps --no-build-isolation -e .
build=(swgguf runtime build --cuda --jobs "$(nproc)")
[ -n "$SDIST" ] && build+=(--sdist "$SDIST" --no-build-isolation)
start=$(date +%s)
"${build[@]}" > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
echo "runtime build: $(( $(date +%s) - start )) s"
swgguf runtime info --json | tee "$OUT/runtime_info.json"
python3 -m pytest -q -ra -m cuda tests/test_runtime_sidecar.py 2>&1 | tee "$OUT/pytest_cuda.log"
python3 bench/runtime_overhead.py --device cuda --reps ${REPS:-5} --out "$OUT/runtime_overhead_cuda.json"
