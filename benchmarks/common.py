"""Output helpers shared by the benchmarks: a table for people, JSON for machines."""

from __future__ import annotations

import asyncio
import json
import platform
import statistics
import sys
from collections.abc import Callable, Coroutine
from typing import Any, NamedTuple


def cpu_seconds() -> tuple[float, float | None]:
    """CPU time used so far by this process (its threads included) and by the PostgreSQL server's
    processes on this machine (None where /proc cannot tell): the benchmark's two sides of a run.

    A backend or an autovacuum worker that ends during a run takes its CPU time out of /proc with
    it: summed over the live processes alone, the server's figure could fall (a run of one test
    read -0.36 cores busy). The kernel adds an ended child's time to its parent's (`cutime`,
    `cstime`) when the parent reaps it, so the postmaster's count of its reaped children is added,
    read after theirs: an ended process is then counted once, live or reaped."""
    import os
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF)
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return me.ru_utime + me.ru_stime, None
    server = [s for s in _proc_stats(pids) if s.name == "postgres"]
    mine = {s.pid for s in server}
    postmasters = [s.pid for s in server if s.parent not in mine]
    reaped = sum(s.reaped for s in _proc_stats(postmasters))
    return me.ru_utime + me.ru_stime, sum(s.cpu for s in server) + reaped


def processes_cpu(pids: list[int]) -> float | None:
    """CPU time used so far by these processes (None where /proc cannot tell): servers the
    benchmark started in processes of their own."""
    stats = _proc_stats(pids)
    return sum(s.cpu for s in stats) if len(stats) == len(pids) else None


class _Stat(NamedTuple):
    pid: int
    name: str
    parent: int
    cpu: float
    """Its own CPU seconds, user and system."""
    reaped: float
    """Its ended children's, once it has reaped them."""


def _proc_stats(pids: list[int]) -> list[_Stat]:
    """Each readable process's /proc/PID/stat: its command name, parent and CPU seconds."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    found = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                name, rest = f.read().split(") ", 1)
        except OSError:
            continue
        fields = rest.split()  # from the state on: the parent is 4th in the file, utime the 14th
        cpu, reaped = int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])
        found.append(_Stat(pid, name.partition("(")[2], int(fields[1]), cpu / tick, reaped / tick))
    return found


def context_switches() -> int:
    """This process's context switches so far, all its threads' (those ended too): each is a wait
    for the other thread's GIL, a lock or the disk, or the scheduler taking the core away."""
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_nvcsw + me.ru_nivcsw


def rounds(text: str) -> int:
    """`--rounds`: at least one (a median of nothing is no figure)."""
    n = int(text)
    if n < 1:
        raise ValueError(text)
    return n


def median(values: list[float]) -> float:
    """The middle of several rounds' figures (rounded as they were): one slow minute moves it less than a mean."""
    return round(statistics.median(values), 3)


def spread(values: list[float], fmt: str) -> str:
    """A figure over rounds: its median, and its range where the rounds differed."""
    text = fmt.format(statistics.median(values))
    if min(values) != max(values):
        text += f" ({fmt.format(min(values))}–{fmt.format(max(values))})"
    return text


Rates = dict[str, float | None]
"""One round's rate per path (None: not run)."""
Cpu = dict[str, tuple[float, float | None]]
"""One round's CPU per path, µs per unit of work: this process's and PostgreSQL's."""


class Over(NamedTuple):
    """One path's figures over the rounds, each round's ratio taken against the baseline beside it."""

    rates: list[float]
    ratios: list[float]
    here: list[float]
    server: list[float]

    def record(self, key: str, rate: dict[str, int | None], ratio: dict[str, float], cpu: dict[str, Any]) -> None:
        """Its medians into the JSON's tables."""
        rate[key] = round(statistics.median(self.rates)) if self.rates else None
        cpu[key] = {
            "this_process": round(statistics.median(self.here)) if self.here else None,
            "postgresql": round(statistics.median(self.server)) if self.server else None,
        }
        if self.ratios:
            ratio[key] = round(statistics.median(self.ratios), 2)

    def cells(self, missing: str, no_ratio: str = "-") -> list[str]:
        """Rate, ratio, CPU here and PostgreSQL's, as the table shows them."""
        return [
            spread(self.rates, "{:,.0f}") if self.rates else missing,
            spread(self.ratios, "{:.1f}x") if self.ratios else no_ratio,
            spread(self.here, "{:,.0f}") if self.here else "-",
            spread(self.server, "{:,.0f}") if self.server else "-",
        ]


def over(runs: list[tuple[Rates, Cpu]], key: str, base: str | None) -> Over:
    """`key`'s figures over `runs`; its ratios against `base` (None: it is a baseline)."""
    return Over(
        [r for got, _ in runs if (r := got.get(key))],
        [r / b for got, _ in runs if base and (r := got.get(key)) and (b := got.get(base))],
        [cpu[key][0] for _, cpu in runs if key in cpu],
        [p for _, cpu in runs if key in cpu and (p := cpu[key][1]) is not None],
    )


def in_rounds(run: Callable[[], Coroutine[Any, Any, Rates]], n: int, cpu: Cpu) -> tuple[str, list[tuple[Rates, Cpu]]]:
    """`run` `n` times, each in a fresh event loop (uvloop where it is installed), its rates beside the
    CPU it recorded in `cpu`; and the loop's name."""
    try:
        import uvloop

        uvloop.install()
        loop_name = "uvloop"
    except ImportError:
        loop_name = "asyncio"
    runs = []
    for _ in range(n):
        cpu.clear()
        runs.append((asyncio.run(run()), dict(cpu)))
    return loop_name, runs


def by_round(runs: list[tuple[Rates, Cpu]]) -> list[dict[str, int | None]]:
    """Each round's rates, whole, for the JSON."""
    return [{k: (round(v) if v else None) for k, v in got.items()} for got, _ in runs]


def machine() -> dict[str, Any]:
    import os

    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}


def report(title: str, header: list[str], rows: list[list[Any]], data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        json.dump({"benchmark": title, "machine": machine(), **data}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    print(f"\n{title}  ({platform.python_version()}, {machine()['cpus']} cpu)")
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *cells, strict=False)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=False)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=False))))
    print("\nJSON:")
    print(json.dumps({"benchmark": title, "machine": machine(), **data}))
