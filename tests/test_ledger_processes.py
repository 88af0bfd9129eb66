"""Proofs with real OS processes: two engines sharing PostgreSQL, and a SIGKILL mid-storm."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rating_engine.ledger import AccountSettings

from .conftest import ROOT
from .helpers import EUR
from .ledgers import opened, pg_database


def worker(url: str, prefix: str, calls: int, seed: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.ledger_worker", url, prefix, str(calls), str(seed), *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def setup_account(url: str, balance: int, threshold: int = 0, **limits: object) -> None:
    async with opened(url) as ledger:
        settings = AccountSettings("office-fr", "EUR", threshold=threshold, **limits)  # type: ignore[arg-type]
        await ledger.create_account("acme", settings)
        await ledger.topup("acme", balance, "opening")


def acknowledged(out: str) -> dict[str, int]:
    return {p[1]: int(p[2]) for p in (line.split() for line in out.splitlines()) if p and p[0] == "settled"}


def test_two_processes_sharing_postgresql_never_overdraw_or_lose_a_debit() -> None:
    with pg_database() as url:
        asyncio.run(setup_account(url, 40 * EUR, threshold=2 * EUR))
        procs = [worker(url, "a", 250, 1), worker(url, "b", 250, 2)]
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
        settled = {**acknowledged(outs[0][0]), **acknowledged(outs[1][0])}
        refused = sum(o.count("refused") for o, _ in outs)
        assert refused > 0, "the balance was meant to run out during the test"

        async def verify() -> None:
            async with opened(url) as ledger:
                acc = await ledger.account("acme")
                rows = await ledger.activity("acme")
                assert {r.call_id: r.cost for r in rows} == settled
                assert acc.balance == 40 * EUR - sum(settled.values())
                assert acc.balance >= acc.floor and acc.reserved == 0
                assert not any(r.overdraft for r in rows)
                assert await ledger.check() == []

        asyncio.run(verify())


def test_two_processes_sharing_postgresql_never_pass_the_concurrent_call_limit_together() -> None:
    with pg_database() as url:
        asyncio.run(setup_account(url, 1_000 * EUR, max_calls=7))
        # 2 x 150 attempts within well under the 3 s each held call lasts: exactly 7 can be held.
        procs = [worker(url, "a", 150, 1, "--hold", "3"), worker(url, "b", 150, 2, "--hold", "3")]
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
        held = sum(o.count("held ") for o, _ in outs)
        refusals = {line.split()[2] for o, _ in outs for line in o.splitlines() if line.startswith("refused")}
        assert held == 7 and refusals == {"too_many_calls"}

        async def verify() -> None:
            async with opened(url) as ledger:
                assert (await ledger.account("acme")).live_calls == 0 and await ledger.check() == []

        asyncio.run(verify())


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sigkill_in_a_settle_storm_leaves_every_call_settled_once_or_still_reserved(
    backend: str, tmp_path: Path
) -> None:
    from .ledgers import database_url

    for url in database_url(backend, tmp_path):
        asyncio.run(setup_account(url, 10_000 * EUR))
        proc = worker(url, "k", 100, 5, "--forever")
        deadline = time.monotonic() + 30
        assert proc.stdout is not None
        lines: list[str] = []
        while len(lines) < 300 and time.monotonic() < deadline:  # let it settle a few hundred calls first
            line = proc.stdout.readline()
            if line.startswith("settled"):
                lines.append(line)
        os.kill(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate(timeout=10)
        assert len(lines) >= 300
        acked = acknowledged("".join(lines) + rest)

        async def verify(url: str, acked: dict[str, int]) -> None:
            async with opened(url) as ledger:
                assert await ledger.check() == []
                rows = await ledger.activity("acme")
                live = await ledger.reservations("acme")
                settled_ids = [r.call_id for r in rows]
                assert len(settled_ids) == len(set(settled_ids))
                assert not set(settled_ids) & {r.call_id for r in live}
                for call_id, cost in acked.items():  # every settle the killed process acknowledged
                    assert call_id in settled_ids and next(r.cost for r in rows if r.call_id == call_id) == cost
                acc = await ledger.account("acme")
                assert acc.balance == 10_000 * EUR - sum(r.cost for r in rows)
                assert acc.reserved == sum(r.amount for r in live)

        asyncio.run(verify(url, acked))
