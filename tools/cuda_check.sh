#!/usr/bin/env bash
# The CUDA checks of the patched runtime on an NVIDIA machine without a package
# index (the project's H200 machine), in steps that each fit in one call:
#
#   tools/cuda_check.sh build    SRC_TAR            # patched llama.cpp -> $BUILD (CUDA, shared libs, llama-bench)
#                                                   ($CMAKE_ARGS: more options, e.g. -DGGML_CUDA_FA=OFF: 191 s, not 287)
#   tools/cuda_check.sh tests    SDIST_PY WHEELS    # the CUDA tests          -> $OUT/pytest_cuda.log
#   tools/cuda_check.sh memcheck SDIST_PY WHEELS    # them under memcheck     -> $OUT/memcheck.log
#   tools/cuda_check.sh bench    SDIST_PY WHEELS [MODELS]  # bench/runtime_overhead -> $OUT/runtime_overhead_cuda.json
#                                                   # ($REPS runs per process, default 5; $ROUNDS rounds, default 3;
#                                                   #  $BENCH_ARGS: more options, e.g. "--cols 2")
#   tools/cuda_check.sh profile  SDIST_PY WHEELS [MODELS [TG_TOKENS]]  # GPU time per kernel (ncu) -> $OUT/ncu_kernels_h200.json
#                                                   ($NCU_ARGS: more options, e.g. "--tests pp512 --runs plain,sidecar2")
#
# SRC_TAR: the patched llama.cpp tree as .tar.xz (made by tools/device_tree.sh).
# SDIST_PY: a folder holding llama-cpp-python's `llama_cpp` package (its Python
# bindings load the libraries of $BUILD through LLAMA_CPP_LIB_PATH).
# WHEELS: pure-Python wheels missing there (gguf, diskcache).
set -euo pipefail
OUT=${OUT:-out/cuda}
BUILD=${BUILD:-device/build}   # may be absolute (outside a tree that a later call replaces)
SRC=${SRC:-device/src}         # where build unpacks SRC_TAR
ARCH=${ARCH:-90}
mkdir -p "$OUT"

build() {
    local src=$SRC
    rm -rf "$src" && mkdir -p "$src" && tar -xJf "$1" -C "$src"
    local start=$(date +%s)
    cmake -S "$src" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_CUDA=ON \
        -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DBUILD_SHARED_LIBS=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_TOOLS=ON \
        -DCMAKE_SHARED_LINKER_FLAGS=-Wl,--exclude-libs,ALL ${CMAKE_ARGS:-} > "$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
    cmake --build "$BUILD" -j "$(nproc)" --target llama llama-bench > "$OUT/build.log" 2>&1 || { tail -60 "$OUT/build.log"; exit 1; }
    echo "build: $(( $(date +%s) - start )) s"
}

source "$(dirname "$0")/device_env.sh"  # env_setup SDIST_PY WHEELS

tests() {  # SDIST_PY WHEELS
    env_setup "$@"
    python3 -c "from swgguf.runtime.info import runtime_info; print(runtime_info().backends)"
    python3 -m pytest -q -ra -m cuda -p no:cacheprovider tests/test_runtime_fusion.py tests/test_runtime_sidecar.py \
        > "$OUT/pytest_cuda.log" 2>&1 || true
    tail -25 "$OUT/pytest_cuda.log"
}

memcheck() {  # SDIST_PY WHEELS
    env_setup "$@"
    # the fusion tests under compute-sanitizer: every type at batch 1 (mmvq/mmvf epilogue,
    # gate+up+GLU), 2 and 33 (the product, then the in-place correction kernel), K = 1, 2, 16
    # (the probe processes' own reports: $OUT/probe-cuda-*.log)
    SWGGUF_FUSION_CASES=sanitizer SWGGUF_PROBE_LOG_DIR="$OUT" compute-sanitizer --tool memcheck \
        --target-processes all --error-exitcode 3 \
        python3 -m pytest -q -ra -m cuda -p no:cacheprovider tests/test_runtime_fusion.py > "$OUT/memcheck.log" 2>&1 \
        && echo "memcheck exit 0" >> "$OUT/memcheck.log" || echo "memcheck exit $?" >> "$OUT/memcheck.log"
    tail -8 "$OUT/memcheck.log"
    grep -H "ERROR SUMMARY" "$OUT"/probe-cuda-*.log || echo "no sanitizer report from the probes"
}

bench() {  # SDIST_PY WHEELS [MODELS]
    env_setup "$@"
    # ROUNDS rounds with the file order rotated: in one llama-bench process a file's place
    # moved the 1.1B model's speed by 5-10% (stop 24)
    python3 bench/runtime_overhead.py --device cuda --models "${3:-synth-1.1b,synth-llama3-8b}" \
        --llama-bench "$BUILD/bin/llama-bench" --reps "${REPS:-5}" --rounds "${ROUNDS:-3}" \
        --out "$OUT/runtime_overhead_cuda.json" --work /tmp ${BENCH_ARGS:-} 2>&1 | tail -40
}

profile() {  # SDIST_PY WHEELS [MODELS [TG_TOKENS]]
    env_setup "$@"
    command -v ncu > /dev/null || export PATH="$PATH:$(ls -d /opt/nvidia/nsight-compute/*/ | tail -1)"
    python3 tools/ncu_kernels.py --llama-bench "$BUILD/bin/llama-bench" --models "${3:-synth-1.1b,synth-llama3-8b}" \
        --tg-tokens "${4:-8,2}" --out "$OUT/ncu_kernels_h200.json" --work /tmp ${NCU_ARGS:-} 2>&1 | tail -20
}

"$@"
