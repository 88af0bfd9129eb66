"""`rating-engine run` (the service) and `rating-engine demo`."""

from __future__ import annotations

import argparse
import asyncio


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    r = sub.add_parser("run", help="run the engine: FastAGI authorization, AMI call tracking, metrics")
    r.add_argument("--config", required=True, help="TOML config (see asterisk_conf/rating-engine.toml)")
    r.add_argument(
        "--check",
        action="store_true",
        help="check the config, the AMI secret, the tariffs and the ledger, say what would run, and exit"
        " (nothing is written: run it before a restart)",
    )
    r.set_defaults(handler=cmd_run)
    d = sub.add_parser("demo", help="the engine on the sample tariffs against the Asterisk simulator")
    d.add_argument("--speed", type=float, default=15.0, help="how much faster than real time (default 15)")
    d.add_argument("--balance", default="4.00", help="the shared account's opening balance (EUR)")
    d.add_argument("--dir", help="where to keep the demo ledger (default: a new temporary directory)")
    d.add_argument("--web", action="store_true", help="also serve the Prepaid Account page while the calls run")
    d.set_defaults(handler=cmd_demo)


def cmd_run(args: argparse.Namespace) -> int:
    from .. import logs
    from ..config import load_config
    from ..service import run

    config = load_config(args.config)
    config.ami.resolved_secret()  # fail now, with one clear line, if there is no secret
    if args.check:
        from .checks import check_run

        return asyncio.run(check_run(args.config, config))
    logs.setup(config.log.level, config.log.format)
    run(config)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .. import logs, number_cache
    from ..demo import run_demo

    logs.setup("error", "text")
    number_cache.install()
    try:
        import uvloop

        return uvloop.run(run_demo(args.speed, args.balance, args.dir, args.web))
    except ImportError:
        return asyncio.run(run_demo(args.speed, args.balance, args.dir, args.web))
