"""Prometheus text-format metrics on a local HTTP port: authorizations by outcome, latency,
live calls, reservations and the AMI link; and where a slow answer waited: the event loop's lag,
the ledger's batches and the garbage collector's passes."""

from __future__ import annotations

import asyncio
import bisect
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields

MAX_REQUEST_BYTES = 8192
BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LOOP_TICK = 0.1
"""Seconds between the loop watch's timers: ten wake-ups a second, a few µs each."""
STALL = 0.1
"""An event loop this many seconds late has stalled: every FastAGI answer of that moment waited."""


class Histogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.n += 1

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, c in zip(BUCKETS, self.counts, strict=False):
            running += c
            out.append(f'{name}_bucket{{le="{bound}"}} {running}')
        out += [f'{name}_bucket{{le="+Inf"}} {self.n}', f"{name}_sum {self.total:.6f}", f"{name}_count {self.n}"]
        return out


async def watch_loop(lag: Histogram, on_stall: Callable[[float], None], tick: float = LOOP_TICK) -> None:
    """How late the event loop runs a timer, into `lag`; `on_stall` hears of a lateness of `STALL` or
    more. A slow answer then says where it waited: in the loop (a long step, the collector), or,
    with the loop on time, in the ledger (`rating_ledger_batch_seconds`)."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + tick
        await asyncio.sleep(tick)
        late = max(0.0, loop.time() - due)
        lag.observe(late)
        if late >= STALL:
            on_stall(late)


class CollectorPauses:
    """Each pass of the cyclic garbage collector, into `histogram`. A pass stops the Python of every
    thread, the event loop's with it: beside the loop's lag, it tells a late loop held by the
    collector from one held by a long step or by the machine."""

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram
        self._started = 0.0

    def start(self) -> None:
        if self._passed not in gc.callbacks:
            gc.callbacks.append(self._passed)

    def stop(self) -> None:
        if self._passed in gc.callbacks:
            gc.callbacks.remove(self._passed)

    def _passed(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.histogram.observe(time.perf_counter() - self._started)


GAUGE = {"kind": "gauge"}
COUNTER = {"kind": "counter"}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the endpoint shows, at one moment; each field is the metric `rating_<field>`."""

    outcomes: dict[str, int] = field(default_factory=dict)
    """Authorizations by outcome (`allow_charged`, `deny_insufficient_funds`, `fallback_timeout`…)."""
    live_calls: int = field(default=0, metadata=GAUGE)
    settled_total: int = field(default=0, metadata=COUNTER)
    released_total: int = field(default=0, metadata=COUNTER)
    extended_total: int = field(default=0, metadata=COUNTER)
    estimated_total: int = field(default=0, metadata=COUNTER)
    cdr_mismatches_total: int = field(default=0, metadata=COUNTER)
    warnings_total: int = field(default=0, metadata=COUNTER)
    velocity_alerts_total: int = field(default=0, metadata=COUNTER)
    ami_connected: int = field(default=0, metadata=GAUGE)
    ami_logins_total: int = field(default=0, metadata=COUNTER)
    ami_login_failures_total: int = field(default=0, metadata=COUNTER)
    accept_errors_total: int = field(default=0, metadata=COUNTER)
    agi_fallbacks_total: int = field(default=0, metadata=COUNTER)
    tariff_reloads_total: int = field(default=0, metadata=COUNTER)
    tariff_reload_failures_total: int = field(default=0, metadata=COUNTER)
    low_balances_total: int = field(default=0, metadata=COUNTER)
    """Settles that took an account below its threshold (each also a notice and an audit line)."""
    topups_paused_total: int = field(default=0, metadata=COUNTER)
    """Automatic top-ups paused after three failures in a row."""
    topup_attempts_total: int = field(default=0, metadata=COUNTER)
    """Charges asked of the payment provider (a retry with the same key counts again)."""
    topups_succeeded_total: int = field(default=0, metadata=COUNTER)
    topups_failed_total: int = field(default=0, metadata=COUNTER)
    topups_awaiting_total: int = field(default=0, metadata=COUNTER)
    """Left pending: on the operator, on the customer (3-D Secure), or on an unreachable provider."""
    spool_waiting: int = field(default=0, metadata=GAUGE)
    """Settlements kept on the engine's disk because the ledger could not be reached."""
    spool_unsaved: int = field(default=0, metadata=GAUGE)
    """Of those, held in memory only: the spool's own file could not be written (disk full, read-only)."""
    spooled_total: int = field(default=0, metadata=COUNTER)
    spool_written_total: int = field(default=0, metadata=COUNTER)
    renew_failures_total: int = field(default=0, metadata=COUNTER)
    """Renewals of live calls the ledger could not take (each try; the deadline stood)."""
    late_reservations_total: int = field(default=0, metadata=COUNTER)
    """Reservations the ledger held after their authorization had given up (answered by the
    fallback): each released at once. Many mean a ledger slower than `answer_timeout`."""
    node_conflicts_total: int = field(default=0, metadata=COUNTER)
    """Its node found held by another engine after the ledger's session was lost (PostgreSQL)."""
    ledger_fallbacks_total: int = field(default=0, metadata=COUNTER)
    """Batches the ledger's fast way (PostgreSQL's function, SQLite's walk) failed on: each ran again
    as programs, so no call was lost, but it is a bug; the log has the traceback."""
    ledger_races_total: int = field(default=0, metadata=COUNTER)
    """Reservations, renewals and settles PostgreSQL's one statement undid because another writer changed
    a row between its look and its lock: each answered by its program, and each the reason for an
    `ERROR: handed back to the program` in PostgreSQL's log. Nothing is wrong; many mean a hot account."""
    pbx_clock_lead_seconds: float = field(default=0.0, metadata=GAUGE)
    """How far the PBX's clock is ahead of the engine's (behind: negative), taken off its event times
    (0 within a second)."""
    clock_step_seconds: float = field(default=0.0, metadata=GAUGE)
    """How far the system clock has stepped from the engine's (0 within a second) while calls were
    live: the ledger's times are that far off the wall clock until the engine follows the step."""
    clock_steps_followed_total: int = field(default=0, metadata=COUNTER)
    """Steps of the system clock the engine's clock took in, each at a moment no call was live."""
    pbx_events_late: int = field(default=0, metadata=GAUGE)
    """1 while AMI events reach the engine over a second after their time, or the PBX's clock is that
    far behind, and no Ping has been answered to say which: calls are then cut that much early."""
    log_lines_dropped_total: int = field(default=0, metadata=COUNTER)
    """Log lines dropped because stderr took none while they came (journald behind, a full pipe):
    the engine never waits on its log."""


class Metrics:
    def __init__(self, collect: Callable[[], Snapshot]) -> None:
        self.latency = Histogram()
        self.loop_lag = Histogram()
        self.collector_pauses = Histogram()
        self.ledger_batches: Histogram | None = None
        self.collect = collect
        self._server: asyncio.Server | None = None

    def render(self) -> str:
        data = self.collect()
        lines = ["# TYPE rating_authorizations_total counter"]
        for outcome, n in sorted(data.outcomes.items()):
            lines.append(f'rating_authorizations_total{{outcome="{outcome}"}} {n}')
        for name, histogram in (
            ("rating_authorize_seconds", self.latency),
            ("rating_event_loop_lag_seconds", self.loop_lag),
            ("rating_collector_pause_seconds", self.collector_pauses),
            ("rating_ledger_batch_seconds", self.ledger_batches),
        ):
            if histogram is not None:
                lines += [f"# TYPE {name} histogram", *histogram.lines(name)]
        for f in fields(Snapshot):
            if "kind" in f.metadata:
                lines += [f"# TYPE rating_{f.name} {f.metadata['kind']}", f"rating_{f.name} {getattr(data, f.name)}"]
        return "\n".join(lines) + "\n"

    async def serve(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._handle, host, port, limit=MAX_REQUEST_BYTES)
        return int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """GET or HEAD /metrics (any query string), CRLF or LF line ends; anything else an HTTP error."""
        try:
            status, body = await asyncio.wait_for(self._request(reader), 5)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        head_only = status.startswith("HEAD ")
        status = status.removeprefix("HEAD ")
        allow = "Allow: GET, HEAD\r\n" if status.startswith("405") else ""
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n{allow}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + (b"" if head_only else body)
        )
        try:
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _request(self, reader: asyncio.StreamReader) -> tuple[str, bytes]:
        try:
            line = await reader.readline()
            total = len(line)
            while True:  # the headers: nothing in them matters here, but they are bounded
                header = await reader.readline()
                total += len(header)
                if header in (b"\r\n", b"\n", b"") or total > MAX_REQUEST_BYTES:
                    break
        except (ValueError, asyncio.LimitOverrunError):
            return "431 Request Header Fields Too Large", b"request too large\n"
        if total > MAX_REQUEST_BYTES:
            return "431 Request Header Fields Too Large", b"request too large\n"
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return "400 Bad Request", b"bad request\n"
        method, target = parts[0], parts[1].split("?", 1)[0]
        if target != "/metrics":
            return "404 Not Found", b"not found\n"
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", b"use GET\n"
        return ("HEAD 200 OK" if method == "HEAD" else "200 OK"), self.render().encode()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
