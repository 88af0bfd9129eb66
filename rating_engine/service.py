"""`rating-engine run`: the ledger, the tariffs, the engine, FastAGI, AMI and metrics together.

Shutdown (SIGTERM/SIGINT): stop taking new authorizations, keep following live calls for a
grace period, close the ledger consistent. Killed instead, nothing is lost: reservations are
durable, deadlines live in Asterisk, and the next start reconciles. SIGHUP reloads tariffs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from .asterisk.agi import AgiRequest
from .asterisk.agi_server import FastAgiServer, Variables
from .asterisk.ami_client import AmiClient
from .clock import Clock
from .config import Config
from .engine import Engine
from .errors import TariffErrors
from .ledger import Ledger, PaymentProvider, default_url, make_ledger
from .metrics import Metrics
from .rating.catalog import TariffStore

log = logging.getLogger("rating_engine.service")


class Service:
    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        ledger: Ledger | None = None,
        provider: PaymentProvider | None = None,
        ami_secret: str | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or Clock()
        self.ledger = ledger or make_ledger(config.ledger.url or default_url(), provider)
        self._own_ledger = ledger is None
        self.ami_secret = ami_secret
        self.tariffs = TariffStore(config.plan_paths())
        self.engine = Engine(self.tariffs, self.ledger, self.clock, config.engine)
        self.metrics = Metrics(self._collect)
        self.agi = FastAgiServer(
            {"authorize": self._authorize},
            self._fallback,
            answer_timeout=config.engine.answer_timeout,
            on_latency=self.metrics.latency.observe,
        )
        self.ami: AmiClient | None = None
        self.agi_port = 0
        self.metrics_port = 0
        self.stopped = asyncio.Event()

    async def _authorize(self, request: AgiRequest) -> Variables:
        return await self.engine.authorize(request.env, request.args)

    def _fallback(self, request: AgiRequest, why: str) -> Variables:
        return self.engine.fallback(request.env, request.args, why)

    def _collect(self) -> dict[str, Any]:
        s = self.engine.stats
        return {
            "outcomes": s.outcomes,
            "live_calls": len(self.engine.calls),
            "settled_total": s.settled,
            "released_total": s.released,
            "extended_total": s.extended,
            "estimated_total": s.estimated,
            "cdr_mismatches_total": s.cdr_mismatches,
            "warnings_total": s.warnings,
            "velocity_alerts_total": s.velocity_alerts,
            "ami_connected": bool(self.ami and self.ami.connected),
            "ami_logins_total": self.ami.logins if self.ami else 0,
            "agi_fallbacks_total": self.agi.stats.fallbacks,
        }

    async def start(self) -> None:
        if self._own_ledger:
            await self.ledger.open()
        a = self.config.ami
        secret = self.ami_secret if self.ami_secret is not None else a.resolved_secret()
        self.ami = AmiClient(
            a.host,
            a.port,
            a.username,
            secret,
            self.engine.handle_event,
            self._on_login,
            action_timeout=a.action_timeout,
            ping_interval=a.ping_interval,
        )
        self.engine.pbx = self.ami
        await self.ami.start()
        host, port = self.config.agi_address
        self.agi_port = await self.agi.start(host, port, reuse_port=self.config.agi.reuse_port)
        if self.config.metrics_address is not None:
            self.metrics_port = await self.metrics.serve(*self.config.metrics_address)
        log.info(
            "engine started",
            extra={
                "agi": f"{host}:{self.agi_port}",
                "ami": f"{a.host}:{a.port}",
                "metrics_port": self.metrics_port,
                "node": self.config.engine.node,
            },
        )

    async def _on_login(self) -> None:
        settled, followed = await self.engine.reconcile()
        log.info("reconciled with Asterisk", extra={"settled": settled, "followed": followed})

    def reload_tariffs(self) -> None:
        try:
            self.tariffs.reload()
            log.info("tariffs reloaded", extra={"plans": len(self.tariffs.current.plans)})
        except TariffErrors as exc:
            log.error("tariff reload refused; the old tariffs stay", extra={"problems": str(exc)})

    async def stop(self, grace: float | None = None) -> None:
        await self.agi.stop_accepting()
        await self.engine.drain(self.config.engine.shutdown_grace if grace is None else grace)
        await self.agi.close()
        if self.ami is not None:
            await self.ami.close()
        await self.metrics.close()
        if self._own_ledger:
            await self.ledger.close()
        self.stopped.set()
        log.info("engine stopped", extra={"live_calls_left": len(self.engine.calls)})

    async def run_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)
        with contextlib.suppress(NotImplementedError, AttributeError):
            loop.add_signal_handler(signal.SIGHUP, self.reload_tariffs)
        await self.start()
        await done.wait()
        log.info(
            "shutting down: no new authorizations; following live calls",
            extra={"live_calls": len(self.engine.calls), "grace": self.config.engine.shutdown_grace},
        )
        await self.stop()


def run(config: Config) -> None:
    """Run on uvloop where it is installed, plain asyncio otherwise."""
    try:
        import uvloop

        uvloop.run(Service(config).run_until_signalled())
    except ImportError:
        asyncio.run(Service(config).run_until_signalled())
