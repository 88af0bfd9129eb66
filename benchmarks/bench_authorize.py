"""FastAGI authorizations per second and latency, the whole live path: TCP accept, AGI
framing, classification, plan, extension rules, price, a ledger reservation, six SET
VARIABLE round trips, close. Every path's server is up for the whole run, and each load is
measured on every path in turn, back to back, so that a ratio compares the same minute's figures.

Load comes from a separate process playing Asterisk (one connection per request, as Asterisk
does), `agi_load.c` compiled for the run: it sends the environments `_env` writes and answers as
the Python generator here does (`--generator python` runs that one, as where no C compiler is),
for a little over half its CPU (34% of a core at 50 channels against 57-63%), which the servers on
the same two cores get instead. Closed loop with 1, 50 and 500 concurrent channels (saturation),
and open loop, Poisson arrivals at 1,000 authorizations per second for 10 s, each latency counted
from the request's scheduled arrival so that a stall is not hidden by the generator waiting for it
(over 3 s, one 40 ms stall of the machine made the p99 by itself, the bare server's too); how late
the generator itself started the requests is reported beside it (it waits on a kernel timer, see
`pacing`: the loop's own timers wake on whole milliseconds, which made every p50 0.3-0.7 ms
longer). The generator's own CPU use is reported too: it shares this machine's two cores with the
server. Each distinct number is seen once per run (cold classification). Baseline in the same run:
a bare FastAGI server answering fixed variables with the same server code (the transport's
ceiling), so a ratio can be read off. Each run also gives the server's CPU per authorization (this
process's, and PostgreSQL's) and its context switches per authorization (its threads': a handoff
between the event loop and the SQLite ledger's thread shows here), beside the rate.
With uvloop it also runs one and then two engine processes on one port (`reuse_port`, the kernel
spreading the connections), sharing one PostgreSQL: the ratio of the two. Beside it, the same for
the bare server, one process and then two: how much a second process can give on this machine at
all, with the generator and the database on the same cores.

Where a slow answer waited, for the paths served in this process, the longest of each run ("loop
late / batch / collector, max ms"; p99s and counts in the JSON): how late the event loop ran a
watch's timer (every 5 ms), how long the ledger's batches took (its thread, its disk, PostgreSQL),
and how long the cyclic garbage collector's longest pass stopped the process. A loop late well
beyond the collector's pass was held by the machine (its cores, the host) or a long step.

After each run, every call the engine holds is hung up through its own Hangup path (its
reservation released), not timed, as a PBX's calls end: kept, the calls of all the runs made the
collector's full passes walk every one of them. Within a run they are kept (10,000 in the open loop).

A third row splits ours in two: the same engine on SQLite, its reservations answered in memory
instead of written (`--no-split` leaves it out). It is not a way to run; it shows, in the same
run, the engine's own share (it against the bare server) and the ledger's (SQLite against it).

`--rounds N` runs the whole cycle N times and shows each row's median, and its ratio taken round by
round against the baseline measured beside it (median and range): this machine's speed moves by a
third within an hour, and one round's ratio can land anywhere in that.

    python benchmarks/bench_authorize.py [--requests N] [--open-seconds S] [--rounds N] [--json]
                                         [--no-postgres] [--no-processes] [--no-split]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import multiprocessing as mp
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from asyncio.subprocess import PIPE
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import pacing
from benchmarks.bench_ledger import postgres_url
from benchmarks.common import context_switches, cpu_seconds, median, processes_cpu, report, rounds, spread
from rating_engine import number_cache
from rating_engine.asterisk.agent import Agent
from rating_engine.asterisk.agi import AgiRequest
from rating_engine.asterisk.agi_server import FastAgiServer
from rating_engine.calls import HungUp
from rating_engine.config import EngineSection
from rating_engine.contract import answer
from rating_engine.engine import Engine
from rating_engine.ledger import AccountSettings, ReserveResult, make_ledger
from rating_engine.ledger.sqlite import SqliteLedger
from rating_engine.metrics import CollectorPauses, Histogram, watch_loop
from rating_engine.rating.catalog import TariffStore
from rating_engine.service import tune_collector

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = (1, 50, 500)
OPEN_RATE = 1000.0
OPEN_SECONDS = 10.0
UNWRITTEN = "split: ours, reservations not written"
WATCH_TICK = 0.005
"""The benchmark's loop watch: finer than the service's 0.1 s, so that a stall of 10 ms is seen
more often than not; 200 timers a second, the same for every path in this process."""
WAITS = ("loop_late_max_ms", "batch_max_ms", "collection_max_ms")
"""A run's longest waits (`waited`), in the order of the table's column."""


def _env(i: int) -> bytes:
    number = f"089912{i % 10000:04d}"
    lines = [
        "agi_network: yes",
        "agi_network_script: authorize",
        "agi_request: agi://127.0.0.1/authorize",
        f"agi_channel: PJSIP/201-{i:08x}",
        "agi_language: en",
        "agi_type: PJSIP",
        f"agi_uniqueid: 1795535109.{i}",
        "agi_version: 22.10.1",
        "agi_callerid: 201",
        "agi_calleridname: Alice",
        "agi_context: from-internal",
        f"agi_extension: {number}",
        "agi_priority: 3",
        "agi_accountcode: acme",
        "agi_arg_1: 201",
        f"agi_arg_2: {number}",
    ]
    return ("\n".join(lines) + "\n\n").encode()


class _Channel(asyncio.Protocol):
    """One AGI() call as Asterisk places it: the environment, then `200 result=1` to each command.

    A protocol, not streams: the generator shares the two cores with the server it measures, so
    it should cost as little per request as it can (streams cost it about twice as much CPU)."""

    def __init__(self, env: bytes, done: asyncio.Future[None]) -> None:
        self.env, self.done = env, done

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.env)

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"200 result=1\n" * data.count(b"\n"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _call(port: int, i: int) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    await loop.create_connection(lambda: _Channel(_env(i), done), "127.0.0.1", port)
    await done


async def _client(port: int, concurrency: int, requests: int, offset: int) -> list[float]:
    latencies: list[float] = []
    counter = iter(range(requests))

    async def channel() -> None:
        for i in counter:
            t0 = time.perf_counter()
            await _call(port, offset + i)
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(channel() for _ in range(concurrency)))
    return latencies


async def _open_client(port: int, rate: float, requests: int, offset: int) -> tuple[list[float], list[float], str]:
    """Poisson arrivals at `rate`; each latency from the moment the request was due. Also how late
    the generator itself started each request (its own turns of the loop, and its timer: see
    `pacing`), a part of every latency that is not the server's, and which timer kept the time."""
    latencies: list[float] = []
    late: list[float] = []
    rng = random.Random(offset)
    offsets = list(itertools.accumulate(rng.expovariate(rate) for _ in range(requests)))
    begin = time.perf_counter()  # after the draws: the first request is not late by their time
    dues = [begin + d for d in offsets]

    async def one(i: int) -> None:
        late.append(time.perf_counter() - dues[i])
        await _call(port, offset + i)
        latencies.append(time.perf_counter() - dues[i])

    tasks: list[asyncio.Future[None]] = []
    timer = await pacing.paced(dues, lambda i: tasks.append(asyncio.ensure_future(one(i))))
    await asyncio.gather(*tasks)
    return latencies, late, timer


def _run_fast(main: Any) -> Any:
    """A coroutine to its end on uvloop where it is installed (as `rating-engine run`)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _load(port: int, concurrency: int, requests: int, offset: int, out: Any) -> None:
    """The Python generator, in a process of its own."""
    cpu, t0 = time.process_time(), time.perf_counter()
    timer = None
    if concurrency < 0:
        lat, late, timer = _run_fast(_open_client(port, -concurrency, requests, offset))
    else:
        lat, late = _run_fast(_client(port, concurrency, requests, offset)), None
    out.put(Load(lat, late, timer, time.process_time() - cpu, time.perf_counter() - t0, 0, PYTHON))


@dataclass
class Load:
    """What a generator measured: each answered request's latency (and, in an open loop, how late
    it was started), its own CPU time, the time from its first request to its last answer."""

    latencies: list[float]
    late: list[float] | None
    timer: str | None
    cpu: float
    elapsed: float
    failed: int
    generator: str
    window: tuple[float, float] = (0.0, math.inf)
    """From the generator's start to its results, on `time.monotonic()`: the run's waits are those
    seen within it (`waited`), not the benchmark's own setup (the environments built, the process
    spawned: 16-20 ms of a late loop before an open-loop run's first request) nor its reading of the
    results."""


PYTHON, C = "Python", "C (agi_load.c)"
GENERATOR_SOURCE = Path(__file__).with_name("agi_load.c")


def build_generator(directory: str) -> Path | None:
    """`agi_load.c` compiled into `directory`; None where no C compiler builds it (the Python
    generator runs instead, and the results say so)."""
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        return None
    binary = Path(directory) / "agi_load"
    done = subprocess.run(
        [cc, "-O2", "-o", str(binary), str(GENERATOR_SOURCE), "-lm"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        print(f"agi_load.c did not build, the Python generator runs: {done.stderr[-500:]}", file=sys.stderr)
        return None
    return binary


async def c_load(binary: Path, port: int, concurrency: int, requests: int, offset: int) -> Load:
    """The C generator: the same environments (`_env`), on its standard input."""
    environments = b"".join(_env(offset + i) for i in range(requests))
    mode = ("open", str(-concurrency)) if concurrency < 0 else ("closed", str(concurrency))
    proc = await asyncio.create_subprocess_exec(
        str(binary), str(port), *mode, str(offset), stdin=PIPE, stdout=PIPE, stderr=PIPE
    )
    spawned = time.monotonic()
    out, err = await proc.communicate(environments)
    window = (spawned, time.monotonic())
    if proc.returncode != 0:
        raise RuntimeError(f"agi_load exited with {proc.returncode}: {err.decode(errors='replace')[-500:]}")
    *lines, summary = out.decode().splitlines()
    _hash, _cpu, cpu, _elapsed, elapsed, _failed, failed = summary.split()
    pairs = [line.split() for line in lines]
    return Load(
        [int(lat) / 1e9 for lat, _late in pairs],
        [int(late) / 1e9 for _lat, late in pairs] if concurrency < 0 else None,
        pacing.TIMERFD if concurrency < 0 else None,
        float(cpu),
        float(elapsed),
        int(failed),
        C,
        window,
    )


def _ms(ordered: list[float], q: float) -> float:
    return round(ordered[int(len(ordered) * q) - 1] * 1000, 3)


async def measure(
    port: int,
    concurrency: int,
    requests: int,
    offset: int,
    server: list[int] | Literal["here"] | None = "here",
    generator: Path | None = None,
    waits: Waits | None = None,
) -> dict[str, Any]:
    """`concurrency` channels in a closed loop; negative: an open loop at that many per second.
    The C `generator` where it was built, else the Python one in a process of its own. With the
    `server` "here" (in this process) or in the processes of those ids, its CPU per authorization too (and PostgreSQL's
    processes' on this machine): where the time goes, beside the rate. `cores_busy`: the server's,
    PostgreSQL's and the generator's CPU over the run's wall time, how much of the machine the
    three took together (a little under: the wall time counts the generator's start; and to a few
    hundredths of a second: /proc counts other processes' CPU in clock ticks). `waits`: what this
    process saw wait meanwhile, its figures added (`waited`)."""
    started = time.monotonic()
    here0, pg0 = cpu_seconds()
    pids = server if isinstance(server, list) else None
    theirs0 = processes_cpu(pids) if pids else None
    switches0 = context_switches()
    if generator is not None:
        load = await c_load(generator, port, concurrency, requests, offset)
    else:
        ctx = mp.get_context("spawn")  # a fork of this process (its loop, threads, sockets) may deadlock
        queue: Any = ctx.Queue()
        proc = ctx.Process(target=_load, args=(port, concurrency, requests, offset, queue))
        proc.start()
        spawned = time.monotonic()
        while proc.is_alive() and queue.empty():
            await asyncio.sleep(0.01)
        done = time.monotonic()
        load = await asyncio.get_running_loop().run_in_executor(None, queue.get)
        load.window = (spawned, done)
        proc.join()
    here1, pg1 = cpu_seconds()
    theirs1 = processes_cpu(pids) if pids else None
    switches1 = context_switches()
    wall = time.monotonic() - started
    if not load.latencies:
        raise RuntimeError(f"no request answered on port {port}: {load.failed} failed")
    lat, late = sorted(load.latencies), None if load.late is None else sorted(load.late)
    busy: float | None = None  # the server's CPU over the run, where it can be read
    if server == "here":
        busy = here1 - here0
    elif theirs0 is not None and theirs1 is not None:
        busy = theirs1 - theirs0
    pg = None if pg0 is None or pg1 is None else pg1 - pg0
    figures = {
        "per_s": round(len(lat) / load.elapsed),
        "p50_ms": round(statistics.median(lat) * 1000, 3),
        "p99_ms": _ms(lat, 0.99),
        "p999_ms": _ms(lat, 0.999),
        "failed": load.failed,
        "generator": load.generator,
        "generator_late_p50_ms": None if late is None else round(statistics.median(late) * 1000, 3),
        "generator_late_p99_ms": None if late is None else _ms(late, 0.99),
        "generator_timer": load.timer,
        "generator_cpu_pct": round(100 * load.cpu / load.elapsed),
        "server_cpu_us": None if busy is None else round(1e6 * busy / len(lat)),
        "postgresql_cpu_us": None if pg is None else round(1e6 * pg / len(lat)),
        "cores_busy": None if busy is None else round((busy + (pg or 0.0) + load.cpu) / wall, 2),
        "server_switches": round((switches1 - switches0) / len(lat), 2) if server == "here" else None,
    }
    return figures if waits is None else figures | waited(*waits, window=load.window)


async def bare_server() -> FastAgiServer:
    fixed = answer("ALLOW", "charged", "+33899123456", "180", "pbx1:1795535109.1:1795535109000", "120")

    async def echo(_req: AgiRequest) -> list[tuple[str, str]]:
        return fixed

    return FastAgiServer({"authorize": echo}, lambda r, w: fixed)


class _Seen(Histogram):
    """A histogram that keeps what it saw, and when it ended: a run's longest wait, not only its bucket."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[float] = []
        self.ended: list[float] = []

    def observe(self, seconds: float) -> None:
        super().observe(seconds)
        self.seen.append(seconds)
        self.ended.append(time.monotonic())

    def clear(self) -> None:
        self.seen.clear()
        self.ended.clear()

    def within(self, window: tuple[float, float]) -> list[float]:
        """The waits that began and ended within `window`, in order."""
        start, end = window
        return sorted(s for s, at in zip(self.seen, self.ended, strict=True) if at - s >= start and at <= end)


Waits = tuple[_Seen, Histogram | None, _Seen]
"""The loop's lateness, the ledger's batches (a `_Seen` where there is a ledger) and the collector's passes."""


def waited(
    loop_late: _Seen, batches: Histogram | None, passes_seen: _Seen, window: tuple[float, float] = (0.0, math.inf)
) -> dict[str, Any]:
    """Where this run's slow answers waited, from what was seen within the generator's `window`:
    how late the event loop ran its watch's timers, how long the ledger's batches took (its thread,
    its disk, PostgreSQL), and how long the collector's passes stopped everything. A loop late beyond
    the collector's longest pass was held by the machine (its cores, the host), or a long step."""
    late = loop_late.within(window)
    seen = batches if isinstance(batches, _Seen) else None
    took = seen.within(window) if seen is not None else []
    passes = passes_seen.within(window)
    return {
        "loop_late_p99_ms": _ms(late, 0.99) if late else None,
        "loop_late_max_ms": round(late[-1] * 1000, 3) if late else None,
        "batch_p99_ms": _ms(took, 0.99) if took else None,
        "batch_max_ms": round(took[-1] * 1000, 3) if took else None,
        "batches": len(took) if seen is not None else None,
        "collections": len(passes),
        "collection_max_ms": round(passes[-1] * 1000, 3) if passes else 0.0,
    }


class _Unwritten(SqliteLedger):
    """Reservations granted in memory, nothing written: the engine without the ledger's trip."""

    async def reserve(
        self, call_id: str, account_id: str, ext: str, amount: int, *args: Any, **kw: Any
    ) -> ReserveResult:
        return ReserveResult(True, None, amount)


async def engine_server(url: str, *, unwritten: bool = False) -> tuple[FastAgiServer, Any, Engine]:
    number_cache.install()  # as `Service.start`: else the first call builds the table (3-4 s)
    ledger = _Unwritten(url.removeprefix("sqlite:///")) if unwritten else make_ledger(url)
    ledger.batch_seconds = _Seen()  # each batch's time, for `waited`
    await ledger.open()
    if await ledger.find_account("acme") is None:
        await ledger.create_account("acme", AccountSettings("office-fr", "EUR"))
        await ledger.topup("acme", 10**15, "bench")
    engine = Engine(TariffStore([ROOT / "tariffs/office-fr.toml"]), ledger, settings=EngineSection())
    server = Agent(engine).fastagi_server(answer_timeout=30)
    return server, ledger, engine


async def hang_up(engine: Engine) -> int:
    """End every call the engine holds, through its own Hangup path (each reservation released),
    as Asterisk's events would; how many. Between runs, not timed: a PBX's calls end, where the
    calls of every run kept to the end had the collector's full passes walk all of them, three
    engines' worth (268 ms in one run), in whichever run a pass fell."""
    calls = list(engine.calls.values())
    await asyncio.gather(*(engine.handle(HungUp(call.uid, None)) for call in calls))
    return len(calls)


def _engine_process(url: str | None, port: int, ready: Any, stop: Any) -> None:
    """One `rating-engine run`-like process on the shared port (SO_REUSEPORT): the engine on the
    ledger at `url`, or the bare server (None)."""

    tune_collector()

    async def serve() -> None:
        server, ledger, engine = (await bare_server(), None, None) if url is None else await engine_server(url)
        await server.start("127.0.0.1", port, reuse_port=True)
        ready.release()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await server.close()
        if engine is not None:  # the next round's processes find the shared ledger as a PBX leaves it
            await hang_up(engine)
        if ledger is not None:
            await ledger.close()

    _run_fast(serve())


BARE_PROCESSES = "bare FastAGI"
PG_PROCESSES = "ours: PostgreSQL"


async def processes(
    url: str | None, count: int, requests: int, offset: int, generator: Path | None
) -> list[dict[str, Any]]:
    """`count` processes behind one port, the kernel spreading connections among them: engines
    sharing the PostgreSQL at `url`, or bare servers (None)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")  # never forked from a process holding a loop, threads and sockets
    ready, stop = ctx.Semaphore(0), ctx.Event()
    procs = [ctx.Process(target=_engine_process, args=(url, port, ready, stop)) for _ in range(count)]
    for proc in procs:
        proc.start()
    for _ in procs:
        await asyncio.get_running_loop().run_in_executor(None, ready.acquire)
    who = BARE_PROCESSES if url is None else PG_PROCESSES
    label = f"{who}, {count} process{'es' if count > 1 else ''} (reuse_port)"
    rows = []
    try:
        pids = [proc.pid for proc in procs if proc.pid is not None]
        # a warm-up, not counted: a fresh process's first calls
        await measure(port, 50, 300, offset, server=None, generator=generator)
        offset += 300
        for c in (50, 500):
            m = await measure(port, c, requests, offset, server=pids, generator=generator)
            offset += requests
            rows.append({"loop": "uvloop", "path": label, "concurrency": c, "requests": requests, **m})
    finally:
        stop.set()
        for proc in procs:
            proc.join(30)
    return rows


async def run(args: argparse.Namespace, loop_name: str, generator: Path | None) -> list[dict[str, Any]]:
    """Every load on every path, on this loop; `generator`: the C one, or None for the Python one."""
    results: list[dict[str, Any]] = []
    backends: list[tuple[str, str | None]] = [("baseline: bare FastAGI", None)]
    with tempfile.TemporaryDirectory() as d:
        if not args.no_split:
            backends.append((UNWRITTEN, f"sqlite:///{d}/unwritten.sqlite3"))
        backends.append(("ours: SQLite", f"sqlite:///{d}/bench.sqlite3"))
        if not args.no_postgres:
            url = await postgres_url()
            backends.append(("ours: PostgreSQL", url) if url else ("ours: PostgreSQL", ""))
        live: list[tuple[str, FastAgiServer, Any, Engine | None, int]] = []
        loop_late = _Seen()
        watch = asyncio.get_running_loop().create_task(watch_loop(loop_late, lambda _late: None, WATCH_TICK))
        passes = _Seen()
        collector = CollectorPauses(passes)  # the service's own, as `rating_collector_pause_seconds`
        collector.start()
        try:
            for label, url in backends:
                if url == "":
                    results.append({"loop": loop_name, "path": label, "skipped": "no PostgreSQL server"})
                    continue
                ledger = engine = None
                server = await bare_server() if url is None else None
                if server is None:
                    server, ledger, engine = await engine_server(url, unwritten=label == UNWRITTEN)  # type: ignore[arg-type]
                live.append((label, server, ledger, engine, await server.start("127.0.0.1", 0)))
            offset = 0
            # Each load on every path in turn, back to back: the machine's speed drifts within a
            # run (the bare server's own rate by half, some days), and a ratio should compare
            # measurements taken in the same minute. Rounds repeat the whole cycle.
            for round_ in range(args.rounds):
                for c in (*CONCURRENCY, -int(OPEN_RATE)):
                    if c < 0:
                        n = int(OPEN_RATE * args.open_seconds)
                    elif c == 1:
                        n = max(args.requests // 5, 200)
                    else:
                        n = args.requests
                    for label, server, ledger, engine, port in live:
                        batches = None if ledger is None else ledger.batch_seconds
                        for seen in (loop_late, batches, passes):
                            if isinstance(seen, _Seen):
                                seen.clear()
                        up = None if engine is None else len(engine.calls)
                        m = await measure(port, c, n, offset, generator=generator, waits=(loop_late, batches, passes))
                        if engine is not None:
                            m |= {
                                "calls_up_before": up,
                                "calls_hung_up": await hang_up(engine),
                                "reservations_left": len(await ledger.reservations()),
                            }
                        offset += n
                        results.append(
                            {
                                "loop": loop_name,
                                "path": label,
                                "concurrency": c,
                                "round": round_,
                                "requests": n,
                                **m,
                                "fallbacks": server.stats.fallbacks,
                            }
                        )
        finally:
            watch.cancel()
            collector.stop()
            for _label, server, ledger, _engine, _port in live:
                await server.close()
                if ledger is not None:
                    await ledger.close()
        pg = next((u for label, u in backends if label == "ours: PostgreSQL" and u), None)
        if loop_name == "uvloop" and not args.no_processes:
            for round_ in range(args.rounds):
                for count in (1, 2):
                    for url in (None, pg) if pg else (None,):
                        at = offset + 10**6 * (4 * round_ + 2 * count + (url is None))
                        rows = await processes(url, count, args.requests, at, generator)
                        results += [{**r, "round": round_} for r in rows]
    return results


COLUMNS = {
    "loop": "loop",
    "path": "path",
    "load": "load",
    "rate": "auth/s",
    "p50": "p50 ms",
    "p99": "p99 ms",
    "ratio": "vs bare",
    "cpu": "CPU µs/auth: here / PostgreSQL",
    "busy": "cores busy",
    "switches": "switches/auth",
    "generator_cpu": "generator CPU %",
    "late": "generator late p50 / p99 ms",
    "waited": "loop late / batch / collector, max ms",
}
"""The table's columns, by the name a row gives each cell, and their headers."""


def table_row(**cells: Any) -> list[Any]:
    """A row of the table from its cells by column name; a column not named is left blank."""
    unknown = cells.keys() - COLUMNS.keys()
    if unknown:
        raise KeyError(f"no such column: {sorted(unknown)}")
    return [cells.get(name, "") for name in COLUMNS]


def summarize(results: list[dict[str, Any]]) -> tuple[list[list[Any]], list[dict[str, Any]]]:
    """One row per loop, path and load: the median of its rounds, and its ratio to the bare server
    taken round by round (each against the baseline measured beside it), median and range.
    The ratio is the rate's under a closed loop, the p99's under the open one."""
    base = {(r["loop"], r["concurrency"], r["round"]): r for r in results if r["path"].startswith("baseline")}
    alone = {  # (who, load, round): one process's run
        (r["path"].split(",")[0], r["concurrency"], r["round"]): r
        for r in results
        if r["path"].endswith("1 process (reuse_port)")
    }
    cores = os.cpu_count() or 1
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    rows: list[list[Any]] = []
    for r in results:
        if "skipped" in r:  # one per run, not per round
            rows.append(table_row(loop=r["loop"], path=r["path"], load="-", rate="skipped: " + r["skipped"]))
            continue
        key = (r["concurrency"], r["round"])
        b = base[(r["loop"], *key)]  # every load of every round has its baseline beside it
        r["vs_bare"] = round(r["p99_ms"] / b["p99_ms"] if r["concurrency"] < 0 else r["per_s"] / b["per_s"], 2)
        one = (r["path"].split(",")[0], *key)
        if r["path"].endswith("2 processes (reuse_port)") and one in alone:
            r["vs_one_process"] = round(r["per_s"] / alone[one]["per_s"], 2)
            if alone[one].get("cores_busy"):
                # At one process's CPU per authorization, the machine's cores allow no more than this
                r["ceiling_vs_one_process"] = round(cores / alone[one]["cores_busy"], 2)
        groups.setdefault((r["loop"], r["path"], r["concurrency"]), []).append(r)
    summary = []
    for (loop, path, c), rs in groups.items():
        mid = {k: median([r[k] for r in rs]) for k in ("per_s", "p50_ms", "p99_ms", "generator_cpu_pct")}
        if c < 0:
            for k in ("generator_late_p50_ms", "generator_late_p99_ms"):
                mid[k] = median([r[k] for r in rs])
        cpu_here = [r["server_cpu_us"] for r in rs if r["server_cpu_us"] is not None]
        cpu_pg = [r["postgresql_cpu_us"] for r in rs if r["postgresql_cpu_us"] is not None]
        busy = [r["cores_busy"] for r in rs if r.get("cores_busy") is not None]
        waits = {k: median(values) for k in WAITS if (values := [r[k] for r in rs if r.get(k) is not None])}
        ratios = [r["vs_bare"] for r in rs]
        timer = rs[0]["generator_timer"]
        row = {
            "loop": loop,
            "path": path,
            "concurrency": c,
            "rounds": len(rs),
            **mid,
            "generator_timer": timer,
            **waits,
        }
        if busy:
            row["cores_busy"] = median(busy)
        row |= {"vs_bare": median(ratios), "vs_bare_min": min(ratios), "vs_bare_max": max(ratios)}
        summary.append(row)
        load = f"open {-c:,}/s" if c < 0 else f"{c} closed"
        ratio = ("p99 " if c < 0 else "") + spread(ratios, "{:.2f}x")  # two decimals: a bare p99 spike read 0.0x
        cpu = f"{median(cpu_here):,.0f}" if cpu_here else ""
        switches = [r["server_switches"] for r in rs if r.get("server_switches") is not None]
        if cpu and "PostgreSQL" in path and cpu_pg:
            cpu += f" / {median(cpu_pg):,.0f}"
        late = f"{mid['generator_late_p50_ms']} / {mid['generator_late_p99_ms']}" if c < 0 else ""
        if timer not in (None, pacing.TIMERFD):
            late += f" ({timer})"
        rows.append(
            table_row(
                loop=loop,
                path=path,
                load=load,
                rate=f"{mid['per_s']:,.0f}",
                p50=mid["p50_ms"],
                p99=mid["p99_ms"],
                ratio=ratio,
                cpu=cpu,
                busy=f"{median(busy):.2f} of {cores}" if busy else "",
                switches=f"{median(switches):.1f}" if switches else "",
                generator_cpu=f"{mid['generator_cpu_pct']:.0f}",
                late=late,
                waited=" / ".join(f"{waits[k]:.1f}" if k in waits else "-" for k in WAITS) if waits else "",
            )
        )
        shared = [r["vs_one_process"] for r in rs if "vs_one_process" in r]
        if shared:
            who = path.split(",")[0]
            ceilings = [r["ceiling_vs_one_process"] for r in rs if "ceiling_vs_one_process" in r]
            pair = {"loop": loop, "path": f"{who}: 2 processes / 1 process", "concurrency": c, "ratio": median(shared)}
            summary.append(pair | ({"ceiling": median(ceilings)} if ceilings else {}))
            ceiling = f"ceiling {spread(ceilings, '{:.2f}x')}" if ceilings else ""
            rows.append(
                table_row(
                    loop=loop,
                    path=f"  {who}: 2 processes / 1",
                    load=load,
                    ratio=spread(shared, "{:.2f}x"),
                    busy=ceiling,
                )
            )
    return rows, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=3000, help="requests per closed-loop run")
    ap.add_argument("--open-seconds", type=float, default=OPEN_SECONDS, help="length of the open-loop run")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--no-processes", action="store_true", help="skip the runs of one and two processes on one port")
    ap.add_argument("--no-split", action="store_true", help="skip the engine with its reservations not written")
    ap.add_argument(
        "--generator",
        choices=("c", "python"),
        default="c",
        help="the load generator: agi_load.c, compiled for the run (the Python one where no compiler builds it),"
        " or the Python one",
    )
    ap.add_argument(
        "--rounds", type=rounds, default=1, help="run every load on every path this many times (medians are shown)"
    )
    args = ap.parse_args()
    tune_collector()  # as `rating-engine run` does
    with tempfile.TemporaryDirectory() as d:
        generator = None if args.generator == "python" else build_generator(d)  # built once, for both loops
        results = asyncio.run(run(args, "asyncio", generator))
        try:
            import uvloop

            results += uvloop.run(run(args, "uvloop", generator))
        except ImportError:
            pass
    rows, summary = summarize(results)
    generators = sorted({r["generator"] for r in results if "generator" in r})
    report(
        f"bench_authorize (FastAGI authorizations; load generator: {', '.join(generators)})",
        list(COLUMNS.values()),
        rows,
        {"rounds": args.rounds, "generator": generators, "summary": summary, "results": results},
        args.json,
    )


if __name__ == "__main__":
    main()
