"""Command-line interface: the only place that reads argv, YAML and environment variables.

Each subcommand lives in its own module exposing ``register(subparsers)``; the
registered parser sets ``func`` to a callable taking the parsed ``args`` and
returning an exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .. import __version__
from . import convert, data, demo, distill, evaluate, info, models, nowcast, train

COMMAND_MODULES = (info, data, train, distill, evaluate, nowcast, models, demo, convert)

log = logging.getLogger("diffcast")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffcast",
        description="Probabilistic precipitation nowcasting with residual diffusion (DiffCast).",
    )
    parser.add_argument("--version", action="version", version=f"diffcast {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``diffcast`` console script."""
    from ..utils.io import BusyError

    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, PermissionError, KeyError, BusyError) as exc:
        # One clear line for bad input; tracebacks only with -vv.
        if args.verbose > 1:
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"diffcast {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"diffcast {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a full disk, a quota, a read-only or failing file system: one line, not a traceback
        if args.verbose > 1:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        print(f"diffcast {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
