"""Dialplan tools: check an extensions.conf against the engine's contract, print the emergency list."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..asterisk import dialplan
from ..errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    d = sub.add_parser("dialplan", help="check an extensions.conf; print the emergency numbers for the dialplan")
    dsub = d.add_subparsers(dest="dialplan_command", metavar="ACTION", required=True)
    c = dsub.add_parser(
        "check",
        help="jump targets, RATING_* cleared before AGI(), no empty L()/TIMEOUT; exit 1 on problems",
    )
    c.add_argument("file", metavar="extensions.conf")
    c.add_argument(
        "--country",
        help="also check the engine-unreachable branch lets through exactly this country's emergency numbers",
    )
    c.set_defaults(handler=cmd_check)
    e = dsub.add_parser("emergency", help="the GotoIf line of the engine-unreachable branch for a country")
    e.add_argument("--country", required=True, help="ISO 3166 code, e.g. FR")
    e.set_defaults(handler=cmd_emergency)


def _country(text: str) -> str:
    code = text.strip().upper()
    if not dialplan.emergency_numbers(code):
        raise ConfigError(f"--country {text!r}: no emergency numbers known for this region (an ISO code like FR)")
    return code


def cmd_check(args: argparse.Namespace) -> int:
    country = _country(args.country) if args.country else None
    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    problems = dialplan.check(dialplan.parse(text, str(path)), country)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"ok: {path}")
    return 0


def cmd_emergency(args: argparse.Namespace) -> int:
    country = _country(args.country)
    print(f" same => n,GotoIf($[{dialplan.emergency_condition(country)}]?emergency)")
    return 0
