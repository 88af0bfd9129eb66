"""`rating-engine run` (the service) and `rating-engine demo`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Config


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
        return asyncio.run(_check(args.config, config))
    logs.setup(config.log.level, config.log.format)
    run(config)
    return 0


async def _check(path: str, config: Config) -> int:
    """What `run` would start with, every part read as `run` reads it; exit 1 if it would not start."""
    from ..ledger import default_url
    from ..ledger.probe import schema_state
    from ..rating.catalog import load_tariffs
    from .common import safe_url

    tariffs = load_tariffs(config.plan_paths())
    url = config.ledger.url or default_url()
    schema = await schema_state(url)
    ami = config.ami
    secret_from = f"file {ami.secret_file}" if ami.secret_file else f"${ami.secret_env}"
    metrics = config.metrics_address
    print(f"config    {path}: node {config.engine.node}")
    print(f"fastagi   {':'.join(map(str, config.agi_address))}{' (reuse_port)' if config.agi.reuse_port else ''}")
    print(f"ami       {ami.username}@{ami.host}:{ami.port}, its secret from {secret_from}")
    print(f"metrics   {':'.join(map(str, metrics)) if metrics else 'off'}")
    for plan in tariffs.plans.values():
        print(f"plan      {plan.name}: deck {plan.deck} ({len(tariffs.by_plan[plan.name]):,} rates)")
    print(f"ledger    {safe_url(url)}: {schema.said()}")
    for warning in tariffs.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    if not schema.startable:
        print("it would not start", file=sys.stderr)
        return 1
    print("ok")
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
