"""`run --check` and `web --check`: what a restart would start with, read as the command reads it,
said line by line, with nothing written and no secret printed. Run before a restart (or from a
config management tool): exit 0 where it would start, 1 where it would refuse, 2 with one line for
a file or a setting that stops it."""

from __future__ import annotations

import sys

from ..config import Config
from ..ledger.probe import SchemaState, schema_state
from ..rating.catalog import load_tariffs
from ..rating.plan import load_plan
from .common import safe_url


async def check_run(path: str, config: Config) -> int:
    tariffs = load_tariffs(config.plan_paths())
    url, schema = await _ledger(config)
    ami = config.ami
    metrics = config.metrics_address
    print(f"config    {path}: node {config.engine.node}")
    print(f"fastagi   {_address(config.agi_address)}{' (reuse_port)' if config.agi.reuse_port else ''}")
    print(f"ami       {ami.username}@{ami.host}:{ami.port}, its secret from {_source(ami.secret_file, ami.secret_env)}")
    print(f"metrics   {_address(metrics) if metrics else 'off'}")
    warnings: list[str] = []
    print(f"payments  {_payments(config, warnings)}")
    for plan in tariffs.plans.values():
        print(f"plan      {plan.name}: deck {plan.deck} ({len(tariffs.by_plan[plan.name]):,} rates)")
    print(f"ledger    {safe_url(url)}: {schema.said()}")
    for name, count in sorted(schema.plans.items()):
        if name not in tariffs.plans:
            warnings.append(
                f"{count} account(s) on plan {name!r}, which no plan file here defines:"
                " every call of theirs but emergency calls would be refused (engine_error)"
            )
    return _verdict(warnings + tariffs.warnings(), schema.startable)


async def check_web(path: str, config: Config) -> int:
    plans = [load_plan(p) for p in config.plan_paths()]  # the page reads the plans, not their decks
    url, schema = await _ledger(config)
    web = config.web
    warnings: list[str] = []
    secret = _source(web.secret_file, web.secret_env)
    if not web.resolved_secret():
        secret = "nowhere"
        warnings.append("no web secret: a random one is made at each start, which logs everybody out")
    print(f"config    {path}")
    print(f"page      {_address(config.web_address)}, sessions signed with a secret from {secret}")
    print(f"payments  {_payments(config, warnings)}")
    print(f"mail      {_mail(config, warnings)}")
    for plan in plans:
        print(f"plan      {plan.name}")
    if schema.version is None:
        print(f"ledger    {safe_url(url)}: no ledger yet: the page makes none (create an account first)")
    else:
        print(f"ledger    {safe_url(url)}: {schema.said()}")
    return _verdict(warnings, schema.startable and schema.version is not None)


async def _ledger(config: Config) -> tuple[str, SchemaState]:
    url = config.ledger.resolved_url()
    return url, await schema_state(url)


def _payments(config: Config, warnings: list[str]) -> str:
    """Which provider takes the top-ups, and where its keys come from; a missing key stops the
    engine and the page both (`make_provider`), so it stops the check."""
    p = config.payments
    if p.provider != "stripe":
        return p.provider
    p.stripe_key()  # raises, as `make_provider` does, where there is none
    hook_from = _source(p.stripe_webhook_secret_file, p.stripe_webhook_secret_env)
    if not p.stripe_webhook_secret():
        hook_from = "nowhere"
        warnings.append(f"no Stripe webhook secret in ${p.stripe_webhook_secret_env}: the page refuses Stripe's events")
    return f"stripe, its key from {_source(p.stripe_key_file, p.stripe_key_env)}, its webhook secret from {hook_from}"


def _mail(config: Config, warnings: list[str]) -> str:
    m = config.mail
    if not m.enabled:
        return "off"
    if m.username and not m.password():
        warnings.append(f"mail: no password for {m.username} in ${m.password_env}: the server will refuse the login")
    login = f", as {m.username} (password from {_source(m.password_file, m.password_env)})" if m.username else ""
    return f"{m.host}:{m.port} ({m.tls}){login}, from {m.sender}"


def _verdict(warnings: list[str], starts: bool) -> int:
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not starts:
        print("it would not start", file=sys.stderr)
        return 1
    print("ok")
    return 0


def _address(host_port: tuple[str, int]) -> str:
    return f"{host_port[0]}:{host_port[1]}"


def _source(file: str, env: str) -> str:
    return f"file {file}" if file else f"${env}"
