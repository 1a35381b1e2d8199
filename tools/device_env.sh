# Sourced by tools/cuda_check.sh and tools/asan_check.sh: the Python side on the GPU machine,
# which has no package index.
#   env_setup SDIST_PY WHEELS: WHEELS (pure-Python wheels it lacks: gguf, diskcache) into
#   /tmp/site, llama-cpp-python's package from SDIST_PY, the libraries of $BUILD/bin
env_setup() {
    [ -d /tmp/site ] || python3 -m pip install -q --no-index --no-deps --target /tmp/site "$2"/*.whl
    export PYTHONPATH="$PWD:$(realpath "$1"):/tmp/site" LLAMA_CPP_LIB_PATH="$(realpath -m "$BUILD")/bin"
}
