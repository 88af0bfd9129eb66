"""`rating-engine run`: the ledger, the tariffs, the engine, FastAGI, AMI and metrics together.

Shutdown (SIGTERM/SIGINT): stop taking new authorizations, keep following live calls for a
grace period, close the ledger consistent. Killed instead, nothing is lost: reservations are
durable, deadlines live in Asterisk, and the next start reconciles. SIGHUP reloads tariffs.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import signal
import time
from typing import Any

from . import logs, number_cache, number_table
from .asterisk.agent import Agent
from .asterisk.ami_client import AmiClient
from .asterisk.cdr import CdrRecords
from .clock import Clock
from .config import Config
from .engine import Engine
from .errors import StartupError, TariffErrors
from .ledger import Ledger, data_dir, make_ledger, sqlite_file
from .metrics import CollectorPauses, Metrics, Snapshot, watch_loop
from .payments import PaymentProvider, TopupRunner, make_provider
from .rating.catalog import Tariffs, TariffStore, load_in_child
from .spool import Spool

log = logging.getLogger("rating_engine.service")
FLUSH_EVERY = 5.0
"""Seconds between two tries at writing the spool while it holds settlements."""
STEP_TOLERANCE = 1.0
"""Seconds the system clock may move from the engine's (slewing NTP moves both alike) before it is said."""


def spool_path(config: Config) -> str:
    if config.engine.spool_file:
        return config.engine.spool_file
    url = config.ledger.resolved_url()
    file = sqlite_file(url)
    if file is not None:
        return f"{file}.{config.engine.node}.spool.jsonl"
    return str(data_dir() / f"{config.engine.node}.spool.jsonl")


def _warn_of(tariffs: Tariffs) -> None:
    for warning in tariffs.warnings():
        log.warning("tariffs loaded with a warning", extra={"warning": warning})


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
        self.ledger = ledger or make_ledger(config.ledger.resolved_url())
        self._own_ledger = ledger is None
        self.topups = TopupRunner(
            self.ledger, provider or make_provider(config.payments, self.ledger), config.payments.timeout
        )
        self.ami_secret = ami_secret
        self.tariffs = TariffStore(config.plan_paths())
        _warn_of(self.tariffs.current)
        self.engine = Engine(self.tariffs, self.ledger, self.clock, config.engine)
        self.engine.on_topup = self.topups.start
        if config.engine.cdr_file:
            self.engine.cdr_records = CdrRecords(config.engine.cdr_file)
        self.engine.spool = Spool(spool_path(config))
        self._flusher: asyncio.Task[None] | None = None
        self.metrics = Metrics(self._collect)
        self.metrics.ledger_batches = self.ledger.batch_seconds
        self._watch: asyncio.Task[None] | None = None
        self._collector = CollectorPauses(self.metrics.collector_pauses)
        self.agent = Agent(self.engine, config.agi.sources)
        self.agi = self.agent.fastagi_server(
            answer_timeout=config.engine.answer_timeout, on_latency=self.metrics.latency.observe
        )
        self.ami: AmiClient | None = None
        self.agi_port = 0
        self.metrics_port = 0
        self.stopped = asyncio.Event()
        self._ledger_open = False
        self.loop_errors = 0
        self.reloads = self.reload_failures = 0
        self._reloading: asyncio.Task[None] | None = None
        self._reload_again = False
        self.accept_errors = 0
        self.clock_step = 0.0
        """Seconds the system clock has stepped away from the engine's, not yet followed (calls were
        live), as last said."""
        self.clock_steps_followed = 0

    def _collect(self) -> Snapshot:
        s = self.engine.stats
        return Snapshot(
            outcomes=dict(s.outcomes),
            live_calls=len(self.engine.calls),
            settled_total=s.settled,
            released_total=s.released,
            extended_total=s.extended,
            estimated_total=s.estimated,
            cdr_mismatches_total=s.cdr_mismatches,
            warnings_total=s.warnings,
            velocity_alerts_total=s.velocity_alerts,
            ami_connected=int(bool(self.ami and self.ami.connected)),
            ami_logins_total=self.ami.logins if self.ami else 0,
            ami_login_failures_total=self.ami.login_failures if self.ami else 0,
            accept_errors_total=self.accept_errors,
            agi_fallbacks_total=self.agi.stats.fallbacks,
            tariff_reloads_total=self.reloads,
            tariff_reload_failures_total=self.reload_failures,
            low_balances_total=s.low_balances,
            renew_failures_total=s.renew_failures,
            late_reservations_total=self.ledger.late_reservations,
            node_conflicts_total=self.ledger.node_conflicts,
            ledger_fallbacks_total=self.ledger.fallbacks,
            ledger_races_total=self.ledger.races,
            pbx_clock_lead_seconds=round(self.engine.event_times.lead, 3),
            clock_step_seconds=round(self.clock_step, 3),
            clock_steps_followed_total=self.clock_steps_followed,
            pbx_events_late=int(self.engine.event_times.behind),
            log_lines_dropped_total=logs.dropped_total(),
            spool_waiting=len(self.engine.spool.entries) if self.engine.spool else 0,
            spool_unsaved=self.engine.spool.unsaved if self.engine.spool else 0,
            spooled_total=self.engine.spool.spooled if self.engine.spool else 0,
            spool_written_total=self.engine.spool.written if self.engine.spool else 0,
            topups_paused_total=self.topups.outcomes["paused"],
            topup_attempts_total=self.topups.attempts,
            topups_succeeded_total=self.topups.outcomes["succeeded"],
            topups_failed_total=self.topups.outcomes["failed"],
            topups_awaiting_total=self.topups.outcomes["pending"],
        )

    async def start(self) -> None:
        """Open the ledger, listen, then connect to AMI; on any failure close what was started
        and raise `StartupError` (one line: the service must exit at once, not hang)."""
        try:
            await self._start()
        except BaseException as exc:
            await self._close_started()
            if isinstance(exc, OSError):
                raise StartupError(f"cannot start: {exc.strerror or exc}") from None
            raise

    async def _start(self) -> None:
        a = self.config.ami
        secret = self.ami_secret if self.ami_secret is not None else a.resolved_secret()
        spool = self.engine.spool
        if spool is not None and not spool.claim():
            node = self.config.engine.node
            raise StartupError(
                f"another rating-engine runs as node {node!r} here (it holds {spool.lock_path}): give each"
                " process its own [engine] node (and its own metrics port), e.g. one config file per process"
            )
        if self._own_ledger:
            try:
                await self.ledger.open()
            except (OSError, ConnectionError) as exc:
                raise StartupError(f"cannot open the ledger: {exc}") from None
            self._ledger_open = True
        try:
            holder = await self.ledger.hold_node(self.config.engine.node)
        except (OSError, ConnectionError) as exc:
            raise StartupError(f"cannot open the ledger: {exc}") from None
        if holder:
            raise StartupError(
                f"another rating-engine runs as node {self.config.engine.node!r} on this ledger ({holder}):"
                " give each PBX's engine its own [engine] node"
            )
        if not number_table.installed():  # before the first call: building it would stall the loop
            started = time.perf_counter()
            numbers = number_cache.install()
            took = round(time.perf_counter() - started, 3)
            log.info("number table ready", extra={"ranges": len(numbers), "seconds": took})
        if spool is not None and spool.load():
            written = await self.engine.flush_spool()
            log.info("spool read at start", extra={"written": written, "left": len(spool.entries)})
        self._flusher = asyncio.get_running_loop().create_task(self._flush_spool_loop())
        self._watch = asyncio.get_running_loop().create_task(watch_loop(self.metrics.loop_lag, _loop_stalled))
        self._collector.start()
        resumed = await self.topups.resume()
        if resumed:
            log.info("top-ups resumed", extra={"count": resumed})
        host, port = self.config.agi_address
        try:
            self.agi_port = await self.agi.start(host, port, reuse_port=self.config.agi.reuse_port)
        except OSError as exc:
            raise StartupError(f"cannot listen for FastAGI on {host}:{port}: {exc.strerror or exc}") from None
        if self.config.metrics_address is not None:
            mhost, mport = self.config.metrics_address
            try:
                self.metrics_port = await self.metrics.serve(mhost, mport)
            except OSError as exc:
                raise StartupError(f"cannot listen for metrics on {mhost}:{mport}: {exc.strerror or exc}") from None
        self.ami = AmiClient(
            a.host,
            a.port,
            a.username,
            secret,
            self.agent.on_ami_event,
            self._on_login,
            on_pong=self.agent.on_pong,
            action_timeout=a.action_timeout,
            ping_interval=a.ping_interval,
        )
        self.engine.pbx = self.ami
        await self.ami.start()
        log.info(
            "engine started",
            extra={
                "agi": f"{host}:{self.agi_port}",
                "ami": f"{a.host}:{a.port}",
                "metrics_port": self.metrics_port,
                "node": self.config.engine.node,
            },
        )

    async def _flush_spool_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            self._watch_clock_step()
            try:
                await self.engine.flush_spool()
            except Exception:  # the spool's own disk: said, and tried again
                log.exception("writing the spool failed")

    def _watch_clock_step(self) -> None:
        """Follow a step of the system clock (an NTP step at boot after the engine started, an
        operator's `date`). The ledger's times follow the engine's clock, which runs on from the
        wall time it read: the engine takes the step in at the first moment no call is live (a
        live call's times are on the clock as it was), and until then it is said and shown.
        Deadlines are right either way: the PBX's clock is measured against the engine's."""
        step = self.clock.stepped()
        if abs(step) <= STEP_TOLERANCE:
            step = 0.0
        moved = self.engine.follow_system_clock() if step else None
        if moved is not None:
            self.clock_steps_followed += 1
            log.warning(
                "the system clock stepped: the engine's clock follows it (no call was live) and reads the PBX's again",
                extra={"seconds": round(moved, 3)},
            )
            self.clock_step = 0.0
            if self.ami is not None:
                self.ami.read_clock()  # the PBX's clock read afresh against the engine's
            return
        if abs(step - self.clock_step) <= STEP_TOLERANCE:
            return
        if step:
            log.warning(
                "the system clock stepped: the engine's clock follows it once no call is live; until "
                "then the ledger's times (the activity, the days of the caps) are that far off it",
                extra={"seconds": round(step, 3), "live_calls": len(self.engine.calls)},
            )
        else:
            log.warning("the system clock is back with the engine's")
        self.clock_step = step

    async def _stop_background(self) -> None:
        for task in (self._flusher, self._watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._flusher = self._watch = None
        self._collector.stop()

    def _let_go_of_node(self) -> None:
        if self.engine.spool is not None:
            self.engine.spool.let_go()

    async def _close_started(self) -> None:
        await self._stop_background()
        self._let_go_of_node()
        for closing in (self.agi.close, self.metrics.close):
            with contextlib.suppress(Exception):
                await closing()
        if self.ami is not None:
            with contextlib.suppress(Exception):
                await self.ami.close()
        if self._own_ledger and self._ledger_open:
            with contextlib.suppress(Exception):
                await self.topups.close()
                await self.ledger.close()
            self._ledger_open = False

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Count what the loop reports instead of printing a raw traceback (e.g. accept() out of
        file descriptors: new FastAGI connections are refused until some close)."""
        message = str(context.get("message", ""))
        exc = context.get("exception")
        self.loop_errors += 1
        if "accept" in message or (isinstance(exc, OSError) and getattr(exc, "errno", None) == errno.EMFILE):
            self.accept_errors += 1
        log.error("event loop error", extra={"error": message, "exception": repr(exc) if exc else ""})

    async def _on_login(self) -> None:
        settled, followed = await self.engine.reconcile()
        log.info("reconciled with Asterisk", extra={"settled": settled, "followed": followed})

    def reload_tariffs(self) -> asyncio.Task[None]:
        """SIGHUP: load the tariffs again off the event loop; one reload at a time, and a signal
        that comes during one starts another after it (the files may have changed again)."""
        if self._reloading is not None and not self._reloading.done():
            self._reload_again = True
        else:
            self._reloading = asyncio.get_running_loop().create_task(self._reload())
        return self._reloading

    async def _reload(self) -> None:
        while True:
            self._reload_again = False
            started = time.monotonic()
            try:
                fresh = await asyncio.wrap_future(load_in_child(self.tariffs.paths))
            except Exception as exc:  # whatever the files hold, a reload never takes the engine down
                self.reload_failures += 1
                problem = str(exc) if isinstance(exc, TariffErrors) else f"{type(exc).__name__}: {exc}"
                log.error("tariff reload refused; the old tariffs stay", extra={"problems": problem})
            else:
                self.tariffs.swap(fresh)
                self.reloads += 1
                seconds = round(time.monotonic() - started, 3)
                log.info("tariffs reloaded", extra={"plans": len(fresh.plans), "seconds": seconds})
                _warn_of(fresh)
            if not self._reload_again:
                return

    async def stop(self, grace: float | None = None) -> None:
        await self.agi.stop_accepting()
        await self.engine.drain(self.config.engine.shutdown_grace if grace is None else grace)
        await self.agi.close()
        if self.ami is not None:
            await self.ami.close()
        await self.metrics.close()
        await self.topups.close()  # the payments under way are recorded before the ledger closes
        await self._stop_background()
        if self._own_ledger and self._ledger_open:
            await self.ledger.close()
            self._ledger_open = False
        self._let_go_of_node()
        self.stopped.set()
        log.info("engine stopped", extra={"live_calls_left": len(self.engine.calls)})

    async def run_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self._loop_exception)
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


def _loop_stalled(seconds: float) -> None:
    log.warning("event loop stalled: every answer of that moment waited", extra={"seconds": round(seconds, 3)})


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard one: each FastAGI request is a connection,
    and a common default of 1,024 is soon reached under a burst. Returns the limit in force."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        return int(soft)
    except (ImportError, ValueError, OSError):
        return -1


FULL_COLLECTION_AFTER = 100
"""Collections of the middle generation before a full one (Python's default: 10)."""


def tune_collector() -> None:
    """Make the cyclic collector's full passes ten times rarer. Each one walks every live call and
    everything cached while the event loop waits: 20–60 ms with 30,000 calls up on this machine,
    and the FastAGI answers of that moment wait with it. At 1,000 authorizations a second, they
    made the open loop's p99 (7–127 ms against 6.5–10 without them, in the same hour). Cyclic
    garbage that outlives the younger passes waits longer to be freed; the engine makes little."""
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_AFTER)


def run(config: Config) -> None:
    """Run on uvloop where it is installed, plain asyncio otherwise."""
    log.info("open files limit", extra={"nofile": raise_fd_limit()})
    tune_collector()
    try:
        import uvloop

        uvloop.run(Service(config).run_until_signalled())
    except ImportError:
        asyncio.run(Service(config).run_until_signalled())
