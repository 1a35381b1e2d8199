"""Evaluate a GGUF in a separate process: ``python -m swgguf.runtime.probe MODEL``.

Tests use it to load crafted files (the parent survives whatever the runtime
does), to compare builds (``LLAMA_CPP_LIB_PATH`` selects the library) and to run a
model split over ggml-rpc-servers (``--rpc``, whose devices stay registered for the
life of the process: :mod:`.rpc`).
Exit status: 0 and logits in ``--out`` (.npy); 1 and a one-line error.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext

import numpy as np

from ..errors import SwggufError
from . import llm, rpc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swgguf.runtime.probe")
    parser.add_argument("model")
    parser.add_argument("--tokens", default="1,2,3,4,5,6,7,8", help="comma-separated token ids")
    parser.add_argument("--out", help="write the float32 logits here (.npy)")
    parser.add_argument("--kv-f32", action="store_true")
    parser.add_argument("--n-gpu-layers", type=int, default=0)
    parser.add_argument("--rpc", help="ggml-rpc-servers HOST:PORT,... (llama.cpp's --rpc): the layers offloaded "
                                      "by --n-gpu-layers are split over their devices")
    parser.add_argument("--no-repack", action="store_true", help="no CPU weight repacking (llama.cpp's --no-repack)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: llama-cpp-python's)")
    parser.add_argument("--log", action="store_true", help="copy llama.cpp's whole log to stderr")
    args = parser.parse_args(argv)
    tokens = [int(t) for t in args.tokens.split(",")]
    log: list[str] = []  # written at the end: llama-cpp-python silences fd 2 while it loads a model
    try:
        with llm.log_sink(lambda level, line: log.append(line)) if args.log else nullcontext():
            if args.rpc:
                rpc.connect(rpc.parse_endpoints(args.rpc))
            n = max(64, len(tokens))
            model = llm.load(args.model, llm.LoadOptions(n_ctx=n, n_batch=n, n_threads=args.threads, kv_f32=args.kv_f32,
                                                         n_gpu_layers=args.n_gpu_layers, repack=not args.no_repack))
            logits = llm.logits(model, tokens)
    except SwggufError as err:
        sys.stderr.write("".join(log))
        print(f"swgguf: error: {err}", file=sys.stderr)
        return 1
    sys.stderr.write("".join(log))
    if args.out:
        np.save(args.out, logits)
    for line in llm.swgguf_log_lines():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
