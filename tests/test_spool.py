"""Surviving the database: a call that ends while PostgreSQL cannot be reached is kept in the
engine's spool, durably, and billed exactly once when the database is back — also across an engine
restart, and also when the engine dies between the ledger's commit and the spool's rewrite.

PostgreSQL is reached through a TCP proxy on 127.0.0.1 that the test cuts (every connection
reset, new ones refused) and restores.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rating_engine.calls import Answered, AuthorizeRequest, HungUp
from rating_engine.config import EngineSection, parse_config
from rating_engine.contract import Reason, Status
from rating_engine.engine import Engine
from rating_engine.ledger import AccountSettings, CallDetails
from rating_engine.ledger.postgres import PostgresLedger
from rating_engine.rating.catalog import TariffStore
from rating_engine.rating.price import cost
from rating_engine.service import spool_path
from rating_engine.spool import Pending, Spool

from .conftest import OFFICE_FR
from .helpers import fail_directory_fsyncs, record_fsyncs
from .test_engine import T0, ManualClock

PREMIUM = "0899123456"


class Proxy:
    """A TCP relay to PostgreSQL that can be cut and restored."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.server: asyncio.Server | None = None
        self.port = 0
        self.pipes: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self.pipes |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.pipes:
            w.transport.abort()
        self.pipes.clear()
        await self.server.wait_closed()

    async def restore(self) -> None:
        await self.start()  # the same port again


@contextlib.asynccontextmanager
async def through_proxy(url: str) -> AsyncIterator[tuple[Proxy, str]]:
    proxy = Proxy(5432)
    await proxy.start()
    try:
        yield proxy, url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    finally:
        with contextlib.suppress(Exception):
            await proxy.cut()


async def engine_on(url: str, spool: Path, clock: ManualClock) -> Engine:
    ledger = PostgresLedger(url)
    await ledger.open()
    engine = Engine(TariffStore([OFFICE_FR]), ledger, clock, EngineSection(node="pbx1"))
    engine.spool = Spool(spool)
    engine.spool.load()
    return engine


async def funded_engine(url: str, spool: Path, clock: ManualClock) -> Engine:
    """The first engine: it also opens the account, 5 EUR on it."""
    engine = await engine_on(url, spool, clock)
    await engine.ledger.create_account("acme", AccountSettings("office-fr", "EUR"))
    await engine.ledger.topup("acme", 5_000_000, "opening")
    return engine


async def test_the_spool_keeps_entries_across_a_reload_and_skips_a_torn_line(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.jsonl")
    first = Pending(
        "settle", "pbx1:1.1:1", 100, 930, CallDetails(40, 100, PREMIUM, "+33899123456", billable_seconds=60)
    )
    await spool.keep(first)
    await spool.keep(Pending("release", "pbx1:1.2:1", 101))
    with open(spool.path, "a") as f:
        f.write('{"kind":"settle","call_id":"pbx1:1.3')  # the engine killed mid-write
    again = Spool(spool.path)
    assert again.load() == [first, Pending("release", "pbx1:1.2:1", 101)]
    await again.drop([again.entries[0]])
    assert Spool(spool.path).load() == [Pending("release", "pbx1:1.2:1", 101)]
    assert oct(spool.path.stat().st_mode & 0o777) == "0o600"


async def test_an_entry_kept_after_a_torn_line_is_not_glued_to_it(tmp_path: Path) -> None:
    """The engine restarted after a crash mid-write, with the database still away: what it keeps
    next starts on a line of its own, and a second restart finds it."""
    spool = Spool(tmp_path / "s.jsonl")
    await spool.keep(Pending("release", "pbx1:1.1:1", 100))
    with open(spool.path, "a") as f:
        f.write('{"kind":"settle","call_id":"pbx1:1.2')  # torn: no newline
    again = Spool(spool.path)
    assert again.load() == [Pending("release", "pbx1:1.1:1", 100)]
    later = Pending("settle", "pbx1:1.3:1", 102, 930, CallDetails(40, 100, PREMIUM, "+33899123456"))
    await again.keep(later)
    assert Spool(spool.path).load() == [Pending("release", "pbx1:1.1:1", 100), later]


async def test_the_spool_file_s_first_append_makes_its_name_durable_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file's fsync makes its bytes durable, not its entry in the directory: a power cut after
    the first settlement was spooled must not take the new file away."""
    synced = record_fsyncs(monkeypatch)
    spool = Spool(tmp_path / "spool" / "s.jsonl")
    await spool.keep(Pending("release", "pbx1:1.1:1", 100))
    # the new directory's name in its parent, the file's bytes, the file's name in the new directory
    assert synced == [str(tmp_path), str(spool.path), str(spool.path.parent)]
    synced.clear()
    await spool.keep(Pending("release", "pbx1:1.2:1", 101))
    assert synced == [str(spool.path)]  # the name is there already: one fsync an entry


async def test_a_new_spool_file_whose_name_cannot_be_synced_is_written_whole_with_the_next_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The first entry's bytes reached the disk but its file's name may not survive a crash (the
    directory's fsync failed): it counts as unsaved, and the next entry rewrites the file whole,
    name synced, with both."""
    spool = Spool(tmp_path / "s.jsonl")
    fail_directory_fsyncs(monkeypatch, errno.EIO)
    first = Pending("release", "pbx1:1.1:1", 100)
    with caplog.at_level("ERROR", "rating_engine.spool"):
        await spool.keep(first)
    assert spool.unsaved == 1 and spool.entries == [first]
    assert "cannot be written durably" in caplog.text and "pbx1:1.1:1" in str(caplog.records[-1].__dict__)
    monkeypatch.undo()  # the disk syncs directories again
    synced = record_fsyncs(monkeypatch)
    second = Pending("release", "pbx1:1.2:1", 101)
    await spool.keep(second)
    assert spool.unsaved == 0 and Spool(spool.path).load() == [first, second]
    assert synced == [str(tmp_path / "s.jsonl.tmp"), str(tmp_path)]  # written whole, its name made durable


async def test_a_call_ending_while_postgresql_is_cut_is_billed_once_when_it_is_back(
    pg_url: str, tmp_path: Path
) -> None:
    clock = ManualClock()
    spool_file = tmp_path / "pbx1.spool.jsonl"
    async with through_proxy(pg_url) as (proxy, url):
        engine = await funded_engine(url, spool_file, clock)
        a = await engine.authorize(AuthorizeRequest("1795535109.1", PREMIUM, "201", "acme"))
        assert a.status is Status.ALLOW and a.reason is Reason.CHARGED
        price = engine.calls[a.call_id].fare.first
        await engine.handle(Answered("1795535109.1", T0 + 5, "PJSIP/201-1", "PJSIP/out-1", "1795535109.2"))
        await proxy.cut()
        clock.advance(50)
        await engine.handle(HungUp("1795535109.1", T0 + 50))  # the settle cannot be written: spooled
        assert [e.call_id for e in Spool(spool_file).load()] == [a.call_id]
        assert engine.stats.settled == 0 and engine.calls == {}
        with pytest.raises(Exception):  # noqa: B017 - the AGI route answers engine_error on any failure
            await asyncio.wait_for(engine.authorize(AuthorizeRequest("1795535110.1", PREMIUM, "201", "acme")), 5)
        # What the AGI route answers when the handler fails or is late: the plan's free calls and
        # emergency numbers still go through, for an extension whose rules the engine has read.
        down = [
            engine.fallback(AuthorizeRequest("1795535110.2", dialed, ext, "acme"), "error")
            for dialed, ext in (("0612345678", "201"), ("112", "299"), (PREMIUM, "201"), ("0612345678", "299"))
        ]
        assert [(x.status, x.reason) for x in down] == [
            (Status.ALLOW, Reason.INCLUDED),
            (Status.ALLOW, Reason.EMERGENCY),
            (Status.DENY, Reason.ENGINE_ERROR),
            (Status.DENY, Reason.ENGINE_ERROR),  # never read: its rules are not known
        ]
        assert await engine.flush_spool() == 0  # still cut: nothing written, nothing lost
        assert len(Spool(spool_file).load()) == 1

        await proxy.restore()
        assert await engine.flush_spool() == 1  # the pool reconnects by itself
        assert Spool(spool_file).load() == [] and engine.stats.settled == 1
        [row] = await engine.ledger.activity("acme")
        assert row.billable_seconds == 45 and not row.estimated
        assert row.cost == cost(45, price) and row.call_id == a.call_id
        assert (await engine.ledger.account("acme")).balance == 5_000_000 - row.cost
        assert await engine.ledger.reservations() == [] and await engine.ledger.check() == []
        await engine.ledger.close()


async def test_spooled_settlements_survive_a_restart_and_a_crash_before_the_rewrite(
    pg_url: str, tmp_path: Path
) -> None:
    clock = ManualClock()
    spool_file = tmp_path / "pbx1.spool.jsonl"
    async with through_proxy(pg_url) as (proxy, url):
        engine = await funded_engine(url, spool_file, clock)
        ids = []
        for n in (1, 3):
            a = await engine.authorize(AuthorizeRequest(f"1795535109.{n}", PREMIUM, "201", "acme"))
            ids.append(a.call_id)
        clock.advance(2)
        await engine.handle(Answered("1795535109.1", T0 + 2, "PJSIP/201-1", "PJSIP/out-1", "1795535109.2"))
        await proxy.cut()
        clock.advance(30)
        await engine.handle(HungUp("1795535109.1", T0 + 32))  # answered: a settle
        await engine.handle(HungUp("1795535109.3", T0 + 20))  # never answered: a release
        with contextlib.suppress(Exception):
            await engine.ledger.close()
        # The engine is gone. A new one starts while the database is still away, then it is back.
        await proxy.restore()
        second = await engine_on(url, spool_file, clock)
        assert [e.kind for e in second.spool.entries] == ["settle", "release"]  # type: ignore[union-attr]
        # It writes the first entry and dies before rewriting the spool...
        await second._apply(second.spool.entries[0])  # type: ignore[union-attr]
        third = await engine_on(url, spool_file, clock)
        assert await third.flush_spool() == 2  # ...so the next writes it again: billed once all the same
        rows = await third.ledger.activity("acme")
        assert [(r.call_id, r.billable_seconds) for r in rows] == [(ids[0], 30)]
        assert (await third.ledger.account("acme")).balance == 5_000_000 - rows[0].cost
        assert await third.ledger.reservations() == [] and await third.ledger.check() == []
        for e in (second, third):
            await e.ledger.close()


def test_a_spool_is_claimed_by_one_process_at_a_time(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "spool" / "pbx1.spool.jsonl"
    mine = Spool(path)
    assert mine.claim() and mine.claim()  # made its directory; claiming again is harmless
    holder = "import sys; from rating_engine.spool import Spool; print(Spool(sys.argv[1]).claim())"
    other = subprocess.run([sys.executable, "-c", holder, str(path)], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == "False"  # another process: refused while this one holds it
    mine.let_go()
    other = subprocess.run([sys.executable, "-c", holder, str(path)], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == "True"
    again = Spool(path)
    assert again.claim()  # and the lock died with the process that held it
    again.let_go()


def test_a_spool_lock_that_cannot_be_made_does_not_stop_the_engine(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "not-a-dir").write_text("")
    spool = Spool(tmp_path / "not-a-dir" / "pbx1.spool.jsonl")
    assert spool.claim()
    assert any(r.getMessage() == "spool lock cannot be made" for r in caplog.records)


@pytest.mark.parametrize(
    ("url", "beside"),
    [
        ("sqlite:////srv/pbx/ledger.sqlite3", "/srv/pbx/ledger.sqlite3.pbx1.spool.jsonl"),
        ("sqlite:////srv/pbx/:memory:", "/srv/pbx/:memory:.pbx1.spool.jsonl"),  # a file, as SQLite reads it
        ("sqlite:///:memory:", None),
        ("sqlite:///", None),
        ("postgresql://engine@db/rating", None),
    ],
)
def test_the_spool_sits_beside_a_sqlite_ledger_file_and_in_the_data_directory_otherwise(
    url: str, beside: str | None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RATING_ENGINE_DATA", str(tmp_path))
    config = parse_config({"engine": {"node": "pbx1"}, "ledger": {"url": url}})
    assert spool_path(config) == (beside or str(tmp_path / "pbx1.spool.jsonl"))
    config = parse_config({"engine": {"node": "pbx1", "spool_file": "/var/spool/x.jsonl"}, "ledger": {"url": url}})
    assert spool_path(config) == "/var/spool/x.jsonl"
