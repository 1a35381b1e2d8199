"""Build, install and inspect the patched llama.cpp runtime."""

from __future__ import annotations

import argparse


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="runtime_command", required=True)
    b = sub.add_parser("build", help="build and install the patched llama-cpp-python")
    b.add_argument("--cuda", action="store_true")
    b.add_argument("--tools", action="store_true")
    b.add_argument("--jobs", type=int, default=None)
    i = sub.add_parser("info", help="report the installed runtime")
    i.add_argument("--json", action="store_true")


def main(args: argparse.Namespace) -> int:
    raise NotImplementedError
