"""Build, install and inspect the patched llama.cpp runtime.

  swgguf runtime build [--cuda] [--tools] [--jobs N]
  swgguf runtime info [--json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..progress import message_reporter
from ..runtime.build import BuildConfig, build_runtime
from .progress_bars import Spinner


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="runtime_command", required=True)
    b = sub.add_parser("build", help="build and install the patched llama-cpp-python (cached)")
    b.add_argument("--cuda", action="store_true", help="build the CUDA backend too")
    b.add_argument("--cuda-arch", default=None, help="CMAKE_CUDA_ARCHITECTURES (default: the GPU's)")
    b.add_argument("--tools", action="store_true",
                   help="also build llama-cli, llama-server, llama-perplexity, llama-quantize, llama-imatrix, llama-bench")
    b.add_argument("--jobs", type=int, default=None, help="parallel compile jobs (default: all cores)")
    b.add_argument("--sdist", type=Path, default=None,
                   help="use this copy of the pinned llama-cpp-python sdist instead of downloading it")
    b.add_argument("--no-build-isolation", action="store_true",
                   help="build with this environment's scikit-build-core (machines without a package index)")
    i = sub.add_parser("info", help="report the installed runtime")
    i.add_argument("--json", action="store_true", help="machine-readable output")


def main(args: argparse.Namespace) -> int:
    return _build(args) if args.runtime_command == "build" else _info(args)


def _build(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    cfg = BuildConfig(cuda=args.cuda, cuda_arch=args.cuda_arch, tools=args.tools, jobs=args.jobs,
                      sdist=args.sdist, build_isolation=not args.no_build_isolation)
    with Spinner(console, "swgguf runtime build", prefix="[bold]runtime build[/] ") as spinner:
        result = build_runtime(cfg, progress=message_reporter(spinner))
    if result.installed:
        console.print(f"installed patched llama-cpp-python ({result.key})")
    else:
        console.print(f"patched runtime up to date ({result.key})")
    for tool in result.tools:
        console.print(f"  {tool}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from ..runtime.info import runtime_info

    info = runtime_info()
    if args.json:
        print(json.dumps(info.as_dict(), indent=2))
        return 0
    table = Table(title="swgguf runtime", show_header=False)
    for key, value in info.as_dict().items():
        table.add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
    Console().print(table)
    return 0
