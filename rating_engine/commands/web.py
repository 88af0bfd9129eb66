"""`rating-engine web` (the Prepaid Account page) and `rating-engine user add`."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    w = sub.add_parser("web", help="serve the Prepaid Account page (balance, activity) on the ledger")
    w.add_argument("--config", required=True, help="TOML config (see asterisk_conf/rating-engine.toml)")
    w.add_argument(
        "--check",
        action="store_true",
        help="check the config, the secrets' presence, the payments, the mail, the plans and the ledger,"
        " say what would be served, and exit (nothing is written)",
    )
    w.set_defaults(handler=cmd_web)
    u = sub.add_parser("user", help="people who log in to the page")
    usub = u.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = usub.add_parser(
        "add",
        help="add an account's administrator (--account) or an operator (--operator); the password is "
        "read from the terminal or from $RATING_ENGINE_PASSWORD, never from the command line",
    )
    add.add_argument("username")
    who = add.add_mutually_exclusive_group(required=True)
    who.add_argument("--account", help="the account this administrator runs")
    who.add_argument("--operator", action="store_true", help="sees and runs every account")
    add.add_argument("--language", default="", choices=["en", "fr"], help="default: the browser's")
    add.add_argument("--email", default="", help="where this administrator's notices go (default: none)")
    add.add_argument("--db", help="ledger URL (default: $RATING_ENGINE_DB or the local SQLite file)")
    add.set_defaults(handler=cmd_user_add)


def cmd_web(args: argparse.Namespace) -> int:
    from .. import logs
    from ..config import load_config
    from ..web.serve import serve

    config = load_config(args.config)
    if args.check:
        from .checks import check_web

        return asyncio.run(check_web(args.config, config))
    logs.setup(config.log.level, config.log.format)
    return asyncio.run(serve(config))


def _password() -> str:
    given = os.environ.get("RATING_ENGINE_PASSWORD")
    if given is not None:
        return given
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        from ..errors import ConfigError

        raise ConfigError("the two passwords differ")
    return first


def cmd_user_add(args: argparse.Namespace) -> int:
    from ..users import Users
    from .ledger import _open

    password = _password()

    async def add() -> None:
        ledger = await _open(args)
        try:
            account = None if args.operator else args.account
            await Users(ledger).add(args.username, password, account, args.language, email=args.email)
        finally:
            await ledger.close()

    asyncio.run(add())
    role = "operator" if args.operator else f"administrator of {args.account}"
    print(f"user {args.username} added: {role}")
    return 0
