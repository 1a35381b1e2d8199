"""`swgguf` command line: one module per subcommand, each with
``configure_parser(parser)`` and ``main(args) -> int``."""
# (the docstring is `swgguf --help`; the subcommand modules are swgguf/commands/*)

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__
from .errors import SwggufError
from .interrupts import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, sigterm_raises

# subcommand name -> module (imported lazily: torch is slow to import and
# `swgguf runtime info` must not need it)
COMMANDS: dict[str, str] = {
    "detect": "swgguf.commands.detect",
    "convert": "swgguf.commands.convert",
    "ppl": "swgguf.commands.ppl",
    "ablate": "swgguf.commands.ablate",
    "demo": "swgguf.commands.demo",
    "runtime": "swgguf.commands.runtime",
}


def _available_commands() -> dict[str, object]:
    modules = {}
    for name, module_name in COMMANDS.items():
        try:
            modules[name] = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:  # a real missing dependency: surface it
                raise
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swgguf", description=__doc__)
    parser.add_argument("--version", action="version", version=f"swgguf {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in _available_commands().items():
        doc = (module.__doc__ or "").strip().splitlines()
        p = sub.add_parser(name, help=doc[0] if doc else None, description=module.__doc__)
        module.configure_parser(p)
        p.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
    )
    # gguf-py's writer logs every file it writes at INFO: not news for our users
    logging.getLogger("gguf").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        with sigterm_raises():  # SIGTERM cleans up as Ctrl-C does
            return int(args._main(args) or 0)
    except SwggufError as err:
        print(f"swgguf: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        terminated = isinstance(err, Terminated)
        print(f"swgguf: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
