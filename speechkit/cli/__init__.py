"""The ``speechkit`` command line. It owns all output and exit codes.

Each subcommand lives in its own module here with ``register(subparsers)`` that adds a parser whose
``func(args) -> int`` runs it. Other installed packages (e.g. ``realtime``) add commands through the
``speechkit.commands`` entry-point group, so speechkit never imports them directly.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from .._version import __version__
from ..errors import SpeechkitError
from ..memory import retain_freed_memory

#: built-in subcommand modules, in help order
COMMAND_MODULES = (
    "speechkit.cli.models",
    "speechkit.cli.enhance",
    "speechkit.cli.aec",
    "speechkit.cli.info",
    "speechkit.cli.demo",
    "speechkit.cli.eval",
    "speechkit.cli.export",
    "speechkit.cli.convert",
)

EXIT_OK = 0
EXIT_FAILED = 1  # some inputs failed, the rest were processed
EXIT_USAGE = 2  # nothing could be done (bad arguments, bad model, missing dependency)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every built-in and plugin subcommand."""
    parser = argparse.ArgumentParser(
        prog="speechkit",
        description="Speech enhancement, separation and echo cancellation.",
    )
    parser.add_argument("--version", action="version", version=f"speechkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    for entry in entry_points(group="speechkit.commands"):
        try:
            entry.load()(subparsers)
        except ImportError as error:  # a plugin whose own dependencies are missing
            logging.getLogger("speechkit").debug("command %s unavailable: %s", entry.name, error)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (also used as the console script)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    retain_freed_memory()  # the command owns the process: reuse large activation buffers (speechkit.memory)
    try:
        return int(args.func(args))
    except SpeechkitError as error:
        print(f"speechkit {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"speechkit {args.command}: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
