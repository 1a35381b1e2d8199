#!/usr/bin/env bash
# Pack a patched llama.cpp tree for the GPU machine (tools/cuda_check.sh build):
#   tools/device_tree.sh LLAMA_CPP_DIR OUT.tar.xz
# Leaves out what a CUDA build of libllama and llama-bench does not read (models,
# docs, the web UI, other backends' sources), so that it travels in a few MB.
set -euo pipefail
src=$1 out=$2
tar -C "$src" -cJf "$out" --exclude=.git --exclude='./build*' --exclude=./models --exclude=./docs \
    --exclude=./benches --exclude=./tools/ui --exclude=./tools/server --exclude=./media \
    --exclude=./ggml/src/ggml-vulkan --exclude=./ggml/src/ggml-sycl --exclude=./ggml/src/ggml-opencl \
    --exclude=./ggml/src/ggml-metal --exclude=./ggml/src/ggml-webgpu --exclude=./ggml/src/ggml-cann \
    --exclude=./ggml/src/ggml-hexagon --exclude=./ggml/src/ggml-openvino --exclude=./ggml/src/ggml-et .
ls -la "$out"
