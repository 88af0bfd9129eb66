"""The `rating-engine` command: one parser, one module of subcommands per concern.

Errors of our own hierarchy become one clear line on stderr and exit code 2 (1 for a
validation that found problems); nothing is printed as a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from . import __version__
from .commands import dialplan, ledger, service, tariffs, web
from .errors import RatingEngineError

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rating-engine",
        description="Real-time prepaid call rating for Asterisk.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _command_modules():
        module.register(sub)
    return parser


def _command_modules() -> list[ModuleType]:
    return [tariffs, ledger, service, dialplan, web]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except RatingEngineError as exc:
        print(f"rating-engine: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `rating-engine … | head`: the reader has gone; say nothing more (stdout would raise again).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    return code


if __name__ == "__main__":
    sys.exit(main())
