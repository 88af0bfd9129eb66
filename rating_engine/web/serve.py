"""Run the page: open the ledger, serve with uvicorn on `[web] bind`, close on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import secrets

import uvicorn

from ..config import Config
from ..errors import StartupError
from ..ledger import make_ledger
from ..notices import Notifier, SmtpSettings
from ..payments import make_provider
from ..rating.plan import load_plan
from .app import create_app

log = logging.getLogger("rating_engine.web")


async def serve(config: Config) -> int:
    secret = config.web.resolved_secret()
    if secret is None:
        secret = secrets.token_urlsafe(32)
        log.warning("no web secret configured: a random one is used, every restart logs everybody out")
    plans = {}
    for path in config.plan_paths():  # the plans alone (a new account's choice), not their rate decks
        plan = load_plan(path)
        plans[plan.name] = plan
    ledger = make_ledger(config.ledger.resolved_url())
    ledger.create = False
    try:
        await ledger.open()
    except (OSError, ConnectionError) as exc:
        raise StartupError(f"cannot open the ledger: {exc}") from None
    host, port = config.web_address
    app = create_app(
        ledger,
        secret,
        provider=make_provider(config.payments, ledger),
        amounts=config.web_amounts,
        plans=plans,
        session_hours=config.web.session_hours,
        secure_cookies=config.web.secure_cookies,
    )
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False))
    notifier = None
    if config.mail.enabled:
        m = config.mail
        smtp = SmtpSettings(m.host, m.port, m.tls, m.username, m.password(), m.sender)
        notifier = Notifier(ledger, smtp)
        mailing = asyncio.get_running_loop().create_task(notifier.run())
        log.info("notices by email", extra={"smtp": f"{m.host}:{m.port}", "tls": m.tls})
    log.info("page served", extra={"web": f"{host}:{port}"})
    try:
        await server.serve()
    finally:
        if notifier is not None:
            notifier.stop()
            await mailing
        await ledger.close()
    return 0 if server.started else 2
