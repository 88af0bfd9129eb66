"""The adversity suite: what a skeptical operator (or an attacker) throws at the engine.

Each test here failed on an earlier version. Extend it: a new way to break the engine gets a
test here first. Commands are driven in-process (`main(argv)`: exit 0/1/2, one line on stderr,
never a traceback); network ports over real sockets on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rating_engine.cli import main
from rating_engine.errors import InvalidAmount
from rating_engine.ledger import AccountSettings, ExtensionSettings, LedgerError
from rating_engine.ledger.programs import MAX_BALANCE
from rating_engine.money import MAX_AMOUNT, parse_amount

from .asterisk_helpers import agi_request, agi_transcript, engine_rig, said, verdict
from .conftest import OFFICE_FR
from .engine_process import free_port, read_metrics
from .helpers import EUR, HEADER, record_fsyncs, run
from .ledgers import opened, until, until_settled, write_lock_held


@pytest.fixture
def db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    assert run(capsys, "account", "create", "acme", "--plan", str(OFFICE_FR), "--db", url)[0] == 0
    assert run(capsys, "account", "topup", "acme", "10", "--reference", "opening", "--db", url)[0] == 0
    return url


def _state(url: str) -> tuple[object, ...]:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        return (
            conn.execute("SELECT balance, typeof(balance) FROM accounts").fetchall(),
            conn.execute("SELECT COUNT(*) FROM journal").fetchone(),
            conn.execute("SELECT COUNT(*) FROM topups").fetchone(),
        )


# ---------------------------------------------------------------- money: bounded, integer, ASCII


@pytest.mark.parametrize(
    "amount",
    [
        "9223372036854",
        "99999999999999999999999",
        "1000000000.000001",
        "１２",
        "١٢",
        "1e3",
        "²",
        "inf",
        "NaN",
        "-5",
        "0",
    ],
)
def test_a_bad_top_up_exits_2_with_one_line_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], db: str, amount: str
) -> None:
    before = _state(db)
    code, out, err = run(capsys, "account", "topup", "acme", amount, "--db", db)
    assert (code, out) == (2, "") and err.count("\n") == 1 and "Traceback" not in err
    assert _state(db) == before


async def test_a_reservation_the_database_takes_after_the_answer_timed_out_is_given_back(
    tmp_path: Path, url: str
) -> None:
    """A database slower than `answer_timeout` (here someone else holds its write lock): the
    dialplan is told no in time, and the reservation the database takes once it is free, which no
    call will follow, is released at once. Before, it held the money until a reconciliation billed
    it as a call whose answer was never seen: the whole first quota, estimated."""
    async with engine_rig(tmp_path, url=url, answer_timeout=0.5) as rig:
        env, _, _ = agi_transcript("answered_callee_hangs_up")  # a premium number: charged
        included = await agi_request(rig.port, [*env[:-1], "agi_arg_2: 0612345678"])  # the account read, kept
        assert verdict(included) == ("ALLOW", "included")
        async with write_lock_held(url, "acme"):
            started = asyncio.get_running_loop().time()
            denied = await agi_request(rig.port, env)
            assert asyncio.get_running_loop().time() - started < 0.5 + 0.5  # not held in the dialplan
            assert verdict(denied) == ("DENY", "engine_error")
            await asyncio.sleep(0.2)
            assert rig.ledger.late_reservations == 0  # still waiting for the lock
        assert await until(lambda: rig.ledger.late_reservations == 1)
        assert await until_settled(rig.ledger)
        account = await rig.ledger.account("acme")
        assert (account.balance, account.reserved) == (20 * EUR, 0)
        assert rig.engine.calls == {} and await rig.ledger.activity("acme") == []
        assert await rig.ledger.check() == []


async def test_no_balance_can_be_pushed_past_its_bound(url: str) -> None:
    async with opened(url) as ledger:
        await ledger.create_account("acme", AccountSettings("office-fr", "EUR"))
        for i in range(MAX_BALANCE // MAX_AMOUNT):
            await ledger.topup("acme", MAX_AMOUNT, f"t{i}")
        with pytest.raises(LedgerError, match="would exceed"):
            await ledger.topup("acme", 1, "one-too-many")
        acc = await ledger.account("acme")
        assert acc.balance == MAX_BALANCE and await ledger.check() == []
        assert "one-too-many" not in [t.reference for t in await ledger.topups("acme")]


def test_the_sqlite_ledger_refuses_a_non_integer_balance(db: str) -> None:
    path = db.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn, pytest.raises(sqlite3.IntegrityError, match="must be integers"):
        conn.execute("UPDATE accounts SET balance = balance + 9223372036854775000")
    with sqlite3.connect(path) as conn, pytest.raises(sqlite3.IntegrityError, match="must be integers"):
        conn.execute("INSERT INTO journal (account_id, at, entry, amount, reference, balance_after)"
                     " VALUES ('acme', 0, 'topup', 1.5, 'x', 1)")  # fmt: skip


@given(st.text(max_size=30))
def test_parse_amount_gives_a_bounded_integer_or_a_clear_refusal(text: str) -> None:
    try:
        value = parse_amount(text)
    except InvalidAmount:
        return
    assert type(value) is int and 0 <= value <= MAX_AMOUNT
    assert text.strip().replace(".", "", 1).lstrip("+").isascii()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    argv=st.lists(
        st.one_of(
            st.sampled_from(["--threshold", "--velocity", "--max-calls", "--timezone", "--office-hours", "none"]),
            st.text(max_size=12),
        ),
        max_size=4,
    )
)
def test_account_set_never_tracebacks(capsys: pytest.CaptureFixture[str], db: str, argv: list[str]) -> None:
    try:
        code = main(["account", "set", "acme", *argv, "--db", db])
    except SystemExit as exc:  # argparse: usage error, exit 2
        code = int(exc.code or 0)
    _, err = capsys.readouterr()
    assert code in (0, 2) and "Traceback" not in err


# ---------------------------------------------------------------- names and references


@pytest.mark.parametrize("name", ["", " ", "a\nb", "\x1b[31mred", "x" * 100_000, "acme;drop", "_acme", "é"])
def test_account_names_have_a_grammar(capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str) -> None:
    url = f"sqlite:///{tmp_path / 'l.sqlite3'}"
    code, _, err = run(capsys, "account", "create", name, "--plan", str(OFFICE_FR), "--db", url)
    assert code == 2 and "account name" in err and len(err) < 400


@pytest.mark.parametrize("ext", ["", "2 01", "201\n", "\x00", "9" * 40])
async def test_extension_names_have_a_grammar(tmp_path: Path, ext: str) -> None:
    async with opened(f"sqlite:///{tmp_path / 'l.sqlite3'}") as ledger:
        await ledger.create_account("acme", AccountSettings("office-fr", "EUR"))
        with pytest.raises(LedgerError, match="extension"):
            await ledger.set_extension("acme", ext, ExtensionSettings())


def test_an_empty_reference_is_refused_so_a_repeat_cannot_credit_twice(
    capsys: pytest.CaptureFixture[str], db: str
) -> None:
    before = _state(db)
    for ref in ("", "   "):
        code, _, err = run(capsys, "account", "topup", "acme", "5", "--reference", ref, "--db", db)
        assert code == 2 and "--reference" in err
    assert _state(db) == before


# ---------------------------------------------------------------- `rating-engine run` under faults


def _config(tmp_path: Path, agi: int, ami: int, metrics: str = "", ledger: str = "") -> Path:
    path = tmp_path / "engine.toml"
    path.write_text(
        f'[agi]\naccount = "fixed:acme"\nbind = "127.0.0.1:{agi}"\n'
        f'[ami]\nport = {ami}\n[ledger]\nurl = "{ledger or f"sqlite:///{tmp_path}/l.sqlite3"}"\n'
        f'[tariffs]\nplans = ["{OFFICE_FR}"]\n[metrics]\nbind = "{metrics}"\n'
    )
    return path


async def _run(
    config: Path, secret: str = "simulator", stderr: int = asyncio.subprocess.PIPE
) -> asyncio.subprocess.Process:
    import os
    import sys

    from .conftest import ROOT

    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rating_engine.cli", "run", "--config", str(config), cwd=ROOT,
        env={**os.environ, "RATING_ENGINE_AMI_SECRET": secret},
        stdout=asyncio.subprocess.PIPE, stderr=stderr,
    )  # fmt: skip


@pytest.mark.parametrize("taken", ["agi", "metrics"])
async def test_a_port_already_taken_makes_run_exit_at_once_with_one_line(tmp_path: Path, taken: str) -> None:
    import socket

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    busy = holder.getsockname()[1]
    agi = busy if taken == "agi" else free_port()
    metrics = f"127.0.0.1:{busy}" if taken == "metrics" else ""
    proc = await _run(_config(tmp_path, agi, free_port(), metrics))
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 15)
    finally:
        holder.close()
        if proc.returncode is None:
            proc.kill()
    lines = [x for x in err.decode().splitlines() if not x.startswith("{")]
    assert proc.returncode == 2 and len(lines) == 1 and "address already in use" in lines[0]
    assert ("FastAGI" if taken == "agi" else "metrics") in lines[0] and "Traceback" not in err.decode()


async def test_an_unreachable_postgresql_makes_run_exit_at_once_with_one_line(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    proc = await _run(_config(tmp_path, free_port(), free_port(), ledger=url))
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    lines = [x for x in err.decode().splitlines() if not x.startswith("{")]
    assert proc.returncode == 2 and len(lines) == 1 and "ledger" in lines[0] and "Traceback" not in err.decode()


async def test_a_wrong_ami_secret_is_logged_and_chargeable_calls_are_refused(tmp_path: Path) -> None:
    import json

    from rating_engine.asterisk.simulator import AsteriskSimulator, Scenario
    from rating_engine.clock import Clock

    sim = AsteriskSimulator(Clock(), agi_port=0, secret="the-right-one")
    agi = free_port()
    config = _config(tmp_path, agi, await sim.start())
    async with opened(f"sqlite:///{tmp_path}/l.sqlite3") as ledger:
        await ledger.create_account("acme", AccountSettings("office-fr", "EUR"))
        await ledger.topup("acme", 10 * EUR, "opening")
    proc = await _run(config, secret="a-wrong-one")
    try:
        assert proc.stderr is not None
        logs: list[dict[str, object]] = []
        while not {"engine started", "AMI login refused"} <= {str(e.get("msg", ""))[:17] for e in logs}:
            line = await asyncio.wait_for(proc.stderr.readline(), 20)
            assert line, "the engine exited"
            logs.append(json.loads(line))
        sim.agi_port = agi
        charged = await sim.place_call(Scenario("0899123456", talk=1))
        assert (charged.status, charged.reason) == ("DENY", "engine_error")
        for dialed, reason in (("0612345678", "included"), ("112", "emergency")):
            call = await sim.place_call(Scenario(dialed, talk=1))
            assert (call.status, call.reason) == ("ALLOW", reason)
        refused = next(e for e in logs if str(e.get("msg", "")).startswith("AMI login refused"))
        assert refused["level"] == "error" and "a-wrong-one" not in json.dumps(logs)
    finally:
        proc.kill()
        await proc.wait()
        await sim.close()


# ---------------------------------------------------------------- the ledger file


@pytest.mark.parametrize(
    "argv",
    [
        ["ledger", "check"],
        ["account", "show", "acme"],
        ["activity", "acme"],
        ["account", "topup", "acme", "5"],
        ["extension", "set", "acme", "201", "--chargeable", "no"],
    ],
)
def test_only_account_create_makes_a_ledger(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str]
) -> None:
    path = tmp_path / "no" / "such" / "dir" / "x.db"
    code, out, err = run(capsys, *argv, "--db", f"sqlite:///{path}")
    assert (code, out) == (2, "") and "no ledger at" in err and not path.exists() and not path.parent.exists()
    code, _, err = run(capsys, *argv, "--db", "sqlite:///")
    assert code == 2 and "needs a file path" in err


def test_a_new_ledger_file_and_its_directories_have_durable_names(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine makes the ledger's file itself (to make it private), so SQLite never syncs its
    name: a crash of the machine in the seconds after the first account was made and funded could
    take the file away. Each new name is fsynced in its directory (SQLite's own fsyncs are in C)."""
    synced = record_fsyncs(monkeypatch)
    path = tmp_path / "data" / "ledger.sqlite3"
    assert run(capsys, "account", "create", "acme", "--plan", str(OFFICE_FR), "--db", f"sqlite:///{path}")[0] == 0
    assert synced[:2] == [str(tmp_path), str(path.parent)]  # "data" in its parent, then the file in "data"
    synced.clear()
    assert run(capsys, "account", "show", "acme", "--db", f"sqlite:///{path}")[0] == 0
    assert synced == []  # the file is there: nothing to make again


def test_a_new_ledger_is_readable_by_its_owner_only(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import os
    import stat

    path = tmp_path / "data" / "rating" / "ledger.sqlite3"
    assert run(capsys, "account", "create", "acme", "--plan", str(OFFICE_FR), "--db", f"sqlite:///{path}")[0] == 0

    def mode(p: Path) -> int:
        return stat.S_IMODE(os.stat(p).st_mode)

    assert mode(path) == 0o600 and mode(path.parent) == 0o700 and mode(path.parent.parent) == 0o700

    async def in_use() -> None:
        async with opened(f"sqlite:///{path}") as ledger:
            await ledger.topup("acme", EUR, "t")
            for side in ("-wal", "-shm"):
                assert mode(path.with_name(path.name + side)) == 0o600

    asyncio.run(in_use())


# ---------------------------------------------------------------- reloading tariffs


@pytest.mark.parametrize(
    "damage",
    [
        lambda plan: plan.write_bytes(b'name = "x"\ncountry = "FR\xff"\n'),  # not UTF-8
        lambda plan: plan.write_text("[[included]\n"),  # not TOML
        lambda plan: plan.unlink(),  # gone
        lambda plan: plan.write_text(plan.read_text().replace('deck = "world.csv"', 'deck = "nowhere.csv"')),
    ],
)
def test_a_reload_that_fails_in_any_way_keeps_the_old_tariffs_and_logs_one_json_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: object
) -> None:
    import json
    import shutil

    from rating_engine.config import Config, TariffsSection
    from rating_engine.ledger import make_ledger
    from rating_engine.service import Service

    plan = tmp_path / "office-fr.toml"
    shutil.copy(OFFICE_FR, plan)
    shutil.copy(OFFICE_FR.parent / "world.csv", tmp_path / "world.csv")
    config = Config(tariffs=TariffsSection(plans=(str(plan),)))
    service = Service(config, ledger=make_ledger(f"sqlite:///{tmp_path / 'l.sqlite3'}"), ami_secret="x")
    before = service.tariffs.current
    damage(plan)  # type: ignore[operator]
    with logs_set_up("info", "json") as handler:
        asyncio.run(_reloaded(service))
        handler.close()  # its last lines written
    assert service.tariffs.current is before and service.reload_failures == 1
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert [e["msg"] for e in lines] == ["tariff reload refused; the old tariffs stay"]


def test_a_reload_of_a_deck_cut_to_its_header_is_taken_and_logged_as_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A deck with no rates is valid (a plan may include all it allows) but refuses every other
    call: a reload that brings one in says so, at start as on SIGHUP."""
    import json
    import shutil

    from rating_engine.config import Config, TariffsSection
    from rating_engine.ledger import make_ledger
    from rating_engine.service import Service

    plan = tmp_path / "office-fr.toml"
    shutil.copy(OFFICE_FR, plan)
    deck = tmp_path / "world.csv"
    shutil.copy(OFFICE_FR.parent / "world.csv", deck)
    config = Config(tariffs=TariffsSection(plans=(str(plan),)))
    with logs_set_up("info", "json") as handler:
        service = Service(config, ledger=make_ledger(f"sqlite:///{tmp_path / 'l.sqlite3'}"), ami_secret="x")
        deck.write_text(HEADER + "\n")  # the header alone
        asyncio.run(_reloaded(service))
        Service(config, ledger=make_ledger(f"sqlite:///{tmp_path / 'l.sqlite3'}"), ami_secret="x")
        handler.close()
    assert service.reloads == 1 and len(service.tariffs.current.by_plan["office-fr"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    said = f"{deck}: no rates: plan 'office-fr' refuses every call it does not include (no_rate)"
    assert [(e["msg"], e.get("warning")) for e in lines if e["level"] != "info"] == [
        ("tariffs loaded with a warning", said),  # the reload
        ("tariffs loaded with a warning", said),  # the next start
    ]


async def _reloaded(service: object) -> None:
    from rating_engine.service import Service

    assert isinstance(service, Service)
    await service.reload_tariffs()


def _big_deck_plan(tmp_path: Path, rows: int) -> Path:
    """The sample plan on the sample deck plus `rows` more prefixes (+99 is spare: no country)."""
    import shutil

    plan = tmp_path / "office-fr.toml"
    shutil.copy(OFFICE_FR, plan)
    world = (OFFICE_FR.parent / "world.csv").read_text()
    filler = "".join(f"99{i:07d},Filler {i % 300},0.{i % 9000 + 1000},0,60,6,,,\n" for i in range(rows))
    (tmp_path / "world.csv").write_text(world + filler)
    return plan


async def test_a_reload_of_a_big_deck_never_stalls_the_fastagi_answers(tmp_path: Path) -> None:
    """Issue #9: SIGHUP with a 1M-row deck left FastAGI requests unanswered for 10 s. The deck is now
    loaded and compiled in a child process; the loop only swaps the reference."""
    import time

    from rating_engine.config import AgiSection, AmiSection, Config, TariffsSection
    from rating_engine.ledger import make_ledger
    from rating_engine.service import Service

    from .asterisk_helpers import agi_request

    plan = _big_deck_plan(tmp_path, 0)
    config = Config(
        agi=AgiSection(bind="127.0.0.1:0", account="fixed:acme"),
        ami=AmiSection(port=free_port()),
        tariffs=TariffsSection(plans=(str(plan),)),
    )
    service = Service(config, ledger=make_ledger(f"sqlite:///{tmp_path / 'l.sqlite3'}"), ami_secret="x")
    await service.ledger.open()
    await service.ledger.create_account("acme", AccountSettings("office-fr", "EUR"))
    await service.start()
    try:
        before = len(next(iter(service.tariffs.current.tables.values())))
        _big_deck_plan(tmp_path, 300_000)
        reload = service.reload_tariffs()
        during, slowest = 0, 0.0
        while not reload.done():
            sent = time.monotonic()
            commands = await asyncio.wait_for(agi_request(service.agi_port, _legit_env("1.1")), 2)
            assert 'SET VARIABLE RATING_REASON "included"' in commands
            if not reload.done():
                during, slowest = during + 1, max(slowest, time.monotonic() - sent)
                if during == 3:
                    assert service.reload_tariffs() is reload  # a SIGHUP during a reload joins it
            await asyncio.sleep(0.005)
        await reload
        assert len(next(iter(service.tariffs.current.tables.values()))) == before + 300_000
        assert service.reloads == 2  # the signal that came during the first load ran it again
        assert during >= 5, "requests were answered while the deck was being loaded"
        assert slowest < config.engine.answer_timeout
    finally:
        await service.stop(grace=0)
        await service.ledger.close()


# ---------------------------------------------------------------- the FastAGI port


def _legit_env(uid: str, dialed: str = "0612345678") -> list[str]:
    from .asterisk_helpers import agi_transcript

    env, _, _ = agi_transcript("answered_callee_hangs_up")
    base = [line for line in env if not line.startswith(("agi_uniqueid", "agi_arg_"))]
    return [*base, f"agi_uniqueid: {uid}", "agi_arg_1: 201", f"agi_arg_2: {dialed}"]


async def test_clients_streaming_replies_without_newlines_are_cut_off_and_others_still_answered(
    tmp_path: Path,
) -> None:
    import time

    from .asterisk_helpers import agi_request, engine_rig

    async with engine_rig(tmp_path) as rig:

        async def flood() -> bool:
            reader, writer = await asyncio.open_connection("127.0.0.1", rig.port)
            writer.write(("\n".join(_legit_env("9.9")) + "\n\n").encode())
            await reader.readline()  # the first SET VARIABLE: now in the reply phase
            try:
                for _ in range(256):  # 2 MB with no newline, unless the server hangs up first
                    writer.write(b"x" * 8192)
                    await writer.drain()
            except ConnectionError:
                pass
            try:
                closed = await asyncio.wait_for(reader.read(), 5) == b""
            except ConnectionResetError:
                closed = True  # closed while our bytes were in flight: the peer sees a reset
            writer.close()
            return closed

        floods = [asyncio.create_task(flood()) for _ in range(4)]
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        commands = await agi_request(rig.port, _legit_env("1.1"))
        assert time.perf_counter() - started < 1.0 and any("included" in c for c in commands)
        assert all(await asyncio.gather(*floods))
        assert rig.agi.stats.bad_requests >= 4


async def test_the_fastagi_port_survives_a_fuzzer(tmp_path: Path) -> None:
    """Hundreds of malformed conversations at once: truncated, oversized, binary, out of order."""
    import random

    from .asterisk_helpers import agi_request, engine_rig

    rng = random.Random(20261125)
    legit = ("\n".join(_legit_env("5.5", "0899123456")) + "\n\n").encode()
    shapes: list[Callable[[], bytes]] = [
        lambda: legit[: rng.randrange(len(legit))],  # cut anywhere
        lambda: bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000))),  # noise
        lambda: legit.replace(b"\n", b"\r\n", rng.randrange(1, 20)),  # mixed line ends
        lambda: b"agi_" + b"a" * 20_000 + b": x\n\n",  # oversized environment
        lambda: legit + b"HANGUP\n" * rng.randrange(1, 4) + b"200 result=1\n",
        lambda: legit + b"520-Invalid command syntax.\n" * rng.randrange(1, 50),  # usage, never ended
        lambda: legit + bytes(rng.randrange(256) for _ in range(500)) + b"\n",
        lambda: b"\n\n",
        lambda: legit.replace(b"agi_network_script: authorize", b"agi_network_script: \xff\xfe"),
        lambda: legit.replace(b"agi_uniqueid: 5.5", b"agi_uniqueid: " + b"9" * 5000),
    ]

    async def attack(payload: bytes) -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", rig.port)
            writer.write(payload)
            await writer.drain()
            with contextlib.suppress(ConnectionError, TimeoutError):
                while await asyncio.wait_for(reader.read(65536), 8):
                    pass  # the server always ends the conversation itself
            writer.close()
        except ConnectionError:
            pass

    async with engine_rig(tmp_path) as rig:
        rig.agi.env_timeout = rig.agi.reply_timeout = 1.0
        await asyncio.gather(*(attack(rng.choice(shapes)()) for _ in range(300)))
        commands = await agi_request(rig.port, _legit_env("7.7"))
        assert any("included" in c for c in commands)
        assert await rig.ledger.check() == []


@given(st.binary(max_size=2000))
def test_the_agi_environment_parser_refuses_garbage_with_its_own_error(data: bytes) -> None:
    from rating_engine.asterisk.agi import AgiProtocolError, parse_env

    try:
        request = parse_env(data)
    except AgiProtocolError:
        return
    assert all(k.startswith("agi_") for k in request.env)


@given(st.lists(st.text(max_size=80), max_size=30))
def test_the_agi_reply_reader_never_raises(lines: list[str]) -> None:
    from rating_engine.asterisk.agi import ReplyReader

    reader = ReplyReader()
    for line in lines:
        reply = reader.feed(line)
        assert reply is None or 0 <= reply.code <= 999


@given(st.binary(max_size=3000))
def test_the_ami_parser_never_raises(data: bytes) -> None:
    from rating_engine.asterisk.ami import AmiParser

    parser = AmiParser(expect_banner=True)
    for i in range(0, len(data), 97):
        for message in parser.feed(data[i : i + 97]):
            assert isinstance(message, dict)


async def test_the_ami_client_survives_a_server_speaking_garbage(tmp_path: Path) -> None:
    """A fake AMI peer that logs in, then sends random and malformed messages and drops the link."""
    import random

    from rating_engine.asterisk.ami import BANNER, AmiParser, format_message
    from rating_engine.asterisk.ami_client import AmiClient

    rng = random.Random(7)
    events: list[dict[str, str]] = []
    sessions = 0

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sessions
        sessions += 1
        writer.write(BANNER)
        parser = AmiParser()
        login = None
        while login is None:
            for msg in parser.feed(await reader.read(4096)):
                login = msg
        writer.write(format_message({"Response": "Success", "ActionID": login.get("ActionID", ""), "Message": "ok"}))
        for _ in range(200):
            kind = rng.randrange(5)
            if kind == 0:
                writer.write(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))))
            elif kind == 1:
                writer.write(format_message({"Event": "Hangup", "Uniqueid": "x" * rng.randrange(1, 5000)}))
            elif kind == 2:
                writer.write(
                    format_message({"Event": "DialEnd", "DialStatus": "ANSWER", "Uniqueid": str(rng.random())})
                )
            elif kind == 3:
                writer.write(b"Response: Success\r\nActionID: nobody-asked\r\n\r\n")
            else:
                writer.write(b"Event: Cdr\r\nBillableSeconds: -\xff\xfe\r\nUniqueID: 1\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def on_event(event: object) -> None:
        events.append(dict(event))  # type: ignore[call-overload]

    client = AmiClient("127.0.0.1", port, "rating", "s", on_event, reconnect_min=0.05, reconnect_max=0.1)
    await client.start()
    for _ in range(200):
        if sessions >= 3:
            break
        await asyncio.sleep(0.05)
    await client.close()
    server.close()
    await server.wait_closed()
    assert sessions >= 3, "the client reconnected after every dropped link"
    assert any(e.get("Event") == "DialEnd" for e in events)


# ---------------------------------------------------------------- prices at their bounds


@settings(max_examples=300)
@given(
    per_minute=st.integers(0, 10**11),
    connect=st.integers(0, 10**11),
    minimum=st.integers(0, 10**11),
    initial=st.integers(1, 3600),
    increment=st.integers(1, 3600),
    seconds=st.lists(st.integers(0, 10**7), min_size=1, max_size=20),
)
def test_vectorized_and_scalar_prices_agree_up_to_the_bounds(
    per_minute: int, connect: int, minimum: int, initial: int, increment: int, seconds: list[int]
) -> None:
    import numpy as np

    from rating_engine.rating.price import Price, PriceColumns, cost, cost_array

    p = Price(per_minute, connect, initial, increment, minimum)
    cols = PriceColumns.from_prices([p] * len(seconds))
    assert cost_array(np.array(seconds, dtype=np.int64), cols).tolist() == [cost(s, p) for s in seconds]
    assert max(cost(s, p) for s in seconds) < 2**63


def test_a_deck_price_beyond_the_bound_is_reported_where_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deck = tmp_path / "d.csv"
    deck.write_text(
        "prefix,destination,rate_per_minute,connect_fee,initial_increment,increment,minimum_charge,valid_from,valid_until\n"
        "33,France,99999999999999999999,0,60,60,,,\n"
        "34,Spain,0.1,0,²,60,,,\n"
    )
    code, _, err = run(capsys, "tariffs", "validate", str(deck))
    assert code == 1 and f"{deck}:2:3" in err and f"{deck}:3:5" in err and "Traceback" not in err


# ---------------------------------------------------------------- rate-file never loses its input


def _calls(path: Path) -> str:
    text = "call_id,extension,dialed,start,billsec\nc1,201,0899123456,2026-11-24T10:00:00,65\n"
    path.write_text(text)
    return text


@pytest.mark.parametrize("same", ["output", "rejects"])
def test_rate_file_never_writes_over_its_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], same: str) -> None:
    src = tmp_path / "calls.csv"
    text = _calls(src)
    argv = ["rate-file", "--plan", str(OFFICE_FR), str(src), "-o", str(src if same == "output" else tmp_path / "o.csv")]
    if same == "rejects":
        argv += ["--rejects", str(src)]
    code, _, err = run(capsys, *argv)
    assert code == 2 and "is the input file" in err and src.read_text() == text


def test_rate_file_with_a_bad_header_leaves_no_output_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "calls.csv"
    src.write_text("who,what\n1,2\n")
    out = tmp_path / "out.csv"
    code, _, err = run(capsys, "rate-file", "--plan", str(OFFICE_FR), str(src), "-o", str(out))
    assert code == 2 and "header" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calls.csv"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"call_id,extension,dialed,start,billsec\nc1,201,0899\xff,2026-11-24T10:00:00,5\n", "not UTF-8"),
        (None, "does not exist"),
    ],
)
def test_rate_file_bad_input_or_output_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, message: str
) -> None:
    src = tmp_path / "calls.csv"
    if content is None:
        _calls(src)
        out = tmp_path / "missing" / "out.csv"
    else:
        src.write_bytes(content)
        out = tmp_path / "out.csv"
    code, _, err = run(capsys, "rate-file", "--plan", str(OFFICE_FR), str(src), "-o", str(out))
    assert code == 2 and message in err and "Traceback" not in err
    assert not out.exists()


def test_rate_file_rejects_a_billsec_beyond_the_bound(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "calls.csv"
    src.write_text(
        "call_id,extension,dialed,start,billsec\n"
        "c1,201,0899123456,2026-11-24T10:00:00,100000000000000\nc2,201,0899123456,2026-11-24T10:00:00,²\n"
    )
    out = tmp_path / "out.csv"
    code, _, _ = run(capsys, "rate-file", "--plan", str(OFFICE_FR), str(src), "-o", str(out))
    assert code == 0 and out.read_text().count("\n") == 1
    assert Path(f"{out}.rejects.csv").read_text().count("billsec") == 3  # header + both rows


@pytest.mark.parametrize("since", ["99999999999999999999", "²", "-5", "10000-01-01", "1e9"])
def test_activity_times_out_of_range_are_one_line(capsys: pytest.CaptureFixture[str], db: str, since: str) -> None:
    code, out, err = run(capsys, "activity", "acme", "--since", since, "--db", db)
    assert (code, out) == (2, "") and err.count("\n") == 1


def test_rate_seconds_beyond_the_bound_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "rate", "--plan", str(OFFICE_FR), "0899123456", "--seconds", str(10**14))
    assert code == 2 and "--seconds" in err


# ---------------------------------------------------------------- plans say what is wrong


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('prefixes = ["870", "881", "882"]', 'prefixes = "870"'), "`prefixes` must be a list"),
        (('country = "FR"', 'country = "ZZ"'), "`country` 'ZZ'"),
        (('regions = ["FR"]', 'regions = ["XX"]'), "unknown region(s) XX"),
        (('premium = "charge"', "premium = 5"), "`premium` must be one of"),
        (("[[included]]", None), "`included` must be a list"),
        (("[blocked]", '[blocked]\ncolour = "red"'), "blocked: unknown key `colour`"),
    ],
)
def test_plan_mistakes_are_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: tuple[str, str | None], message: str
) -> None:
    import shutil

    shutil.copy(OFFICE_FR.parent / "world.csv", tmp_path / "world.csv")
    plan = tmp_path / "plan.toml"
    text = OFFICE_FR.read_text()
    assert change[0] in text
    old, new = change
    plan.write_text(text.split(old)[0] + "included = 5\n" if new is None else text.replace(old, new, 1))
    code, _, err = run(capsys, "tariffs", "validate", str(plan))
    assert code == 1 and message in err and "Traceback" not in err


def test_a_plan_that_is_not_utf8_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_bytes(b'name = "caf\xe9"\n')
    code, _, err = run(capsys, "tariffs", "validate", str(plan))
    assert code == 1 and "not UTF-8" in err


# ---------------------------------------------------------------- configuration and the metrics port


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[agi]\nbind = "127.0.0.1:99999"', "from 0 to 65535"),
        ('[metrics]\nbind = "127.0.0.1:-1"', "from 0 to 65535"),
        ('[agi]\nbind = "127.0.0.1:４５７３"', "from 0 to 65535"),
        ("[ami]\nport = 70000", "ami.port"),
    ],
)
def test_ports_are_validated(tmp_path: Path, toml: str, message: str) -> None:
    from rating_engine.config import load_config
    from rating_engine.errors import ConfigError

    path = tmp_path / "c.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_config(path)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", b"200"),
        (b"GET /metrics?x=1 HTTP/1.1\r\n\r\n", b"200"),
        (b"GET /metrics HTTP/1.0\n\n", b"200"),  # LF only
        (b"HEAD /metrics HTTP/1.1\r\n\r\n", b"200"),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"405"),
        (b"GET /other HTTP/1.1\r\n\r\n", b"404"),
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", b"431"),
        (b"GET /metrics HTTP/1.1\r\n" + b"X: y\r\n" * 3000 + b"\r\n", b"431"),
    ],
)
async def test_the_metrics_port_answers_http_properly(request_bytes: bytes, status: bytes) -> None:
    from rating_engine.metrics import Metrics, Snapshot

    metrics = Metrics(lambda: Snapshot(outcomes={"allow_included": 1}, live_calls=2))
    port = await metrics.serve("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_bytes)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 " + status)
        if status == b"200" and not request_bytes.startswith(b"HEAD"):
            assert b'rating_authorizations_total{outcome="allow_included"} 1' in answer
            assert b"# TYPE rating_live_calls gauge\nrating_live_calls 2\n" in answer
    finally:
        await metrics.close()


def test_output_piped_into_head_ends_quietly(tmp_path: Path) -> None:
    import subprocess
    import sys

    from .conftest import ROOT

    # `true` exits before the engine has started: every write of the command meets a closed pipe.
    shell = f"{sys.executable} -m rating_engine.cli tariffs show {OFFICE_FR} | true; echo ${{PIPESTATUS[0]}}"
    done = subprocess.run(["bash", "-c", shell], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "141" and done.stderr == ""


# ---------------------------------------------------------------- call identity


def _callid(commands: list[str]) -> str:
    return next(c for c in commands if "RATING_CALLID" in c).split(" ", 3)[3].strip('"')


def _reason(commands: list[str]) -> str:
    return next(c for c in commands if "RATING_REASON" in c).split(" ", 3)[3].strip('"')


async def test_a_channel_that_dials_twice_gets_two_reservations(tmp_path: Path) -> None:
    from .asterisk_helpers import agi_request, engine_rig

    async with engine_rig(tmp_path) as rig:
        first = await agi_request(rig.port, _legit_env("1795535109.77", "0899123456"))
        await asyncio.sleep(0.01)
        second = await agi_request(rig.port, _legit_env("1795535109.77", "+1 212 555 0100"))
        assert _reason(first) == _reason(second) == "charged"
        assert _callid(first) != _callid(second)
        # the channel is back in the dialplan: its first Dial is over (never answered: released)
        [live] = await rig.ledger.reservations()
        assert live.call_id == _callid(second) and '"e164": "+12125550100"' in live.details
        assert _callid(first) not in rig.engine.calls and await rig.ledger.check() == []


@pytest.mark.parametrize("uid_line", ["", "agi_uniqueid: ", "agi_uniqueid: " + "9" * 500])
async def test_a_charged_call_without_a_usable_uniqueid_is_refused(tmp_path: Path, uid_line: str) -> None:
    from .asterisk_helpers import agi_request, engine_rig

    async with engine_rig(tmp_path) as rig:
        for dialed, reason in (("0899123456", "engine_error"), ("0612345678", "included"), ("112", "emergency")):
            env = [x for x in _legit_env("x", dialed) if not x.startswith("agi_uniqueid")]
            commands = await agi_request(rig.port, [*env, uid_line] if uid_line else env)
            assert _reason(commands) == reason
        assert await rig.ledger.reservations() == []


# ---------------------------------------------------------------- the SQLite ledger's own disk


@contextlib.contextmanager
def small_disk(size: str = "2m") -> Iterator[Path]:
    """A file system of its own (tmpfs), to fill up or mount read-only; it needs root."""
    import os
    import subprocess
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root: the disk-full and read-only tests did not run")
    where = Path(tempfile.mkdtemp(prefix="rating-engine-disk-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode:
        where.rmdir()
        pytest.skip(f"cannot mount a small file system here ({mounted.stderr.decode().strip()}): tests did not run")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        where.rmdir()


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)
    return filler


async def test_a_full_disk_refuses_chargeable_calls_keeps_the_settlement_and_corrupts_nothing() -> None:
    from rating_engine.calls import AuthorizeRequest, HungUp
    from rating_engine.config import EngineSection
    from rating_engine.contract import Reason, Status
    from rating_engine.engine import Engine
    from rating_engine.ledger.sqlite import SqliteLedger
    from rating_engine.rating.catalog import TariffStore
    from rating_engine.rating.price import cost
    from rating_engine.spool import Spool

    from .test_engine import T0, ManualClock, answered

    with small_disk() as disk:
        ledger = SqliteLedger(disk / "ledger.sqlite3")
        ledger.create = True
        await ledger.open()
        await ledger.create_account("acme", AccountSettings("office-fr", "EUR"))
        await ledger.topup("acme", 10 * EUR, "opening")
        clock = ManualClock()
        engine = Engine(TariffStore([OFFICE_FR]), ledger, clock, EngineSection(node="pbx1"))
        engine.spool = Spool(disk / "ledger.sqlite3.pbx1.spool.jsonl")  # beside the ledger: full too
        first = await engine.authorize(AuthorizeRequest("1795535109.1", "0899123456", "201", "acme"))
        price = engine.calls[first.call_id].fare.first
        await engine.handle(answered("1795535109.1", T0))
        filler = _fill(disk)
        held, error = [], None
        for n in range(2, 400):  # SQLite writes into what its files already hold, then needs more
            try:
                held.append(await engine.authorize(AuthorizeRequest(f"1795535109.{n}", "0899123456", "202", "acme")))
            except sqlite3.OperationalError as exc:
                error = exc
                break
        assert error is not None and "database or disk is full" in str(error)
        request = AuthorizeRequest("1795535109.999", "0899123456", "201", "acme")
        assert engine.fallback(request, "error").reason is Reason.ENGINE_ERROR  # what the caller hears
        included = engine.fallback(AuthorizeRequest("1795535109.998", "0612345678", "201", "acme"), "error")
        assert (included.status, included.reason) == (Status.ALLOW, Reason.INCLUDED)

        clock.advance(40)
        await engine.handle(HungUp("1795535109.1", T0 + 40))  # neither the ledger nor the spool can write
        assert [e.call_id for e in engine.spool.entries] == [first.call_id] and engine.spool.unsaved == 1
        account = await ledger.account("acme")  # reads still work; nothing was half-written
        assert account.balance == 10 * EUR and await ledger.check() == []
        assert account.reserved == sum(r.amount for r in await ledger.reservations())

        filler.unlink()  # the operator frees the disk
        assert await engine.flush_spool() == 1 and engine.spool.unsaved == 0
        clock.advance(1)
        for a in held:
            await engine.handle(HungUp(a.call_id.split(":")[1], T0 + 41))
        account = await ledger.account("acme")
        assert account.balance == 10 * EUR - cost(40, price) and account.reserved == 0
        assert await ledger.check() == [] and await ledger.reservations() == []
        [row] = await ledger.activity("acme")
        assert (row.call_id, row.billable_seconds) == (first.call_id, 40)
        await ledger.close()
        with sqlite3.connect(disk / "ledger.sqlite3") as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def test_a_disk_slow_to_fsync_the_spool_never_holds_up_an_emergency_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ledger is away when a call ends: its settlement goes to the spool, written and fsynced
    before the engine forgets the call. That write ran in the event loop, so a disk slow to fsync
    (another program flushing a lot, a failing drive) held every FastAGI answer as long, emergency
    calls included: Asterisk has no read timeout on FastAGI. It runs on the spool's own thread now."""
    import threading
    import time

    from rating_engine.asterisk.agi import parse_env
    from rating_engine.calls import HungUp
    from rating_engine.spool import Spool

    from .test_engine import answered

    async with engine_rig(tmp_path) as rig:
        rig.engine.spool = Spool(tmp_path / "pbx1.spool.jsonl")
        env, _, _ = agi_transcript("answered_callee_hangs_up")  # a premium number: charged
        uid = parse_env("\n".join(env).encode()).uniqueid
        charged = said(await agi_request(rig.port, env))
        assert charged["RATING_REASON"] == "charged"
        await rig.engine.handle(answered(uid, time.time()))

        async def away(*args: object, **kw: object) -> object:
            raise ConnectionResetError("the database is away")

        monkeypatch.setattr(rig.ledger, "settle", away)
        fsync, syncing = os.fsync, threading.Event()

        def slow_fsync(fd: int) -> None:
            syncing.set()
            time.sleep(1.5)
            fsync(fd)

        monkeypatch.setattr(os, "fsync", slow_fsync)  # the spool writes through os.fsync
        started = time.monotonic()
        ending = asyncio.create_task(rig.engine.handle(HungUp(uid, time.time())))
        assert await asyncio.to_thread(syncing.wait, 5)  # the settle failed, the spool's fsync is under way
        emergency = await agi_request(rig.port, [*env[:-1], "agi_arg_2: 112"])
        assert verdict(emergency) == ("ALLOW", "emergency")
        assert time.monotonic() - started < 1.0, "the FastAGI answer waited for the spool's fsync"
        assert not ending.done()
        await ending
        assert [e.call_id for e in rig.engine.spool.entries] == [charged["RATING_CALLID"]]
        monkeypatch.undo()
        assert Spool(rig.engine.spool.path).load() == rig.engine.spool.entries  # durable, as before
        assert await rig.engine.flush_spool() == 1 and Spool(rig.engine.spool.path).load() == []
        assert await rig.ledger.reservations() == [] and await rig.ledger.check() == []


async def test_a_ledger_on_a_read_only_file_system_is_one_clear_line(tmp_path: Path) -> None:
    import subprocess

    with small_disk() as disk:
        url = f"sqlite:///{disk / 'ledger.sqlite3'}"
        from rating_engine.ledger import make_ledger

        ledger = make_ledger(url)
        ledger.create = True
        async with ledger:
            await ledger.create_account("acme", AccountSettings("office-fr", "EUR"))
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        proc = await _run(_config(tmp_path, free_port(), free_port(), ledger=url))
        _, err = await asyncio.wait_for(proc.communicate(), 20)  # it exits: nothing hangs
        lines = [x for x in err.decode().splitlines() if not x.startswith("{")]
        assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in err.decode()
        assert "cannot be written (a read-only file, directory or file system)" in lines[0]
        assert str(disk / "ledger.sqlite3") in lines[0]


def test_a_file_system_that_cannot_sync_a_directory_still_takes_a_new_ledger(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EINVAL from a directory's fsync (some network and FUSE file systems) is no reason to refuse
    the ledger; any other error still is."""
    import errno

    from .helpers import fail_directory_fsyncs

    fail_directory_fsyncs(monkeypatch, errno.EINVAL)
    path = tmp_path / "nfs" / "ledger.sqlite3"
    assert run(capsys, "account", "create", "acme", "--plan", str(OFFICE_FR), "--db", f"sqlite:///{path}")[0] == 0
    monkeypatch.undo()
    fail_directory_fsyncs(monkeypatch, errno.EIO)
    code, _, err = run(
        capsys,
        "account",
        "create",
        "other",
        "--plan",
        str(OFFICE_FR),
        "--db",
        f"sqlite:///{tmp_path / 'io' / 'l.sqlite3'}",
    )
    assert code == 2 and "cannot open the ledger" in err and "Input/output error" in err  # one line, no traceback
    assert "Traceback" not in err


# ---------------------------------------------------------------- the log's sink


@contextlib.contextmanager
def logs_set_up(*args: Any, **kw: Any) -> Iterator[Any]:
    """`logs.setup` for one test; the handlers and levels as they were after (pytest's own)."""
    import logging

    from rating_engine import logs

    root, ours = logging.getLogger(), logging.getLogger("rating_engine")
    before = (root.handlers[:], root.level, ours.handlers[:], ours.level, ours.propagate)
    handler = logs.setup(*args, **kw)
    try:
        yield handler
    finally:
        handler.close()
        root.handlers[:], root.level, ours.handlers[:], ours.level, ours.propagate = before


async def test_a_stderr_nobody_reads_never_holds_up_an_emergency_call(tmp_path: Path) -> None:
    """`run` logs to stderr: a pipe to journald, say. When its reader falls behind the pipe fills,
    and a log line written in the event loop held every FastAGI answer until it drained, emergency
    calls included. Lines are written by a thread of their own now."""
    import fcntl
    import json
    import sys
    import termios

    from rating_engine.asterisk.simulator import AsteriskSimulator, Scenario
    from rating_engine.clock import Clock

    sim = AsteriskSimulator(Clock(), agi_port=0, secret="simulator")
    agi, metrics = free_port(), free_port()
    config = _config(tmp_path, agi, await sim.start(), metrics=f"127.0.0.1:{metrics}")
    async with opened(f"sqlite:///{tmp_path}/l.sqlite3") as ledger:
        await ledger.create_account("acme", AccountSettings("office-fr", "EUR"))
    read_end, write_end = os.pipe()
    # A small pipe, four times the largest write that waits whole (PIPE_BUF, 4 KiB): a blocked log
    # thread then leaves it at least three-quarters full, however its lines were grouped (with a
    # 4 KiB pipe, a group of 3.7 KiB could wait with 395 bytes in it).
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 16384)
    proc = await _run(config, stderr=write_end)
    os.close(write_end)
    text = b""

    async def read_until(msg: str, count: int = 1) -> list[dict[str, object]]:
        """The whole lines it has written, read until `count` of them say `msg`."""
        nonlocal text
        while True:
            lines = [json.loads(x) for x in text.splitlines(keepends=True) if x.endswith(b"\n")]
            if sum(e["msg"] == msg for e in lines) >= count:
                return lines
            chunk = await asyncio.wait_for(asyncio.to_thread(os.read, read_end, 65536), 20)
            assert chunk, "the engine exited"
            text += chunk

    try:
        await read_until("reconciled with Asterisk")

        async def bad_requests(n: int) -> None:
            for _ in range(n):  # each one logged
                assert await asyncio.wait_for(agi_request(agi, ["not a FastAGI environment"]), 2) == []

        def waiting() -> int:
            return int.from_bytes(fcntl.ioctl(read_end, termios.FIONREAD, b"\0\0\0\0"), sys.byteorder)

        await bad_requests(200)  # far more than the pipe holds, none read
        level = -1
        for _ in range(50):  # the log's own thread writes them a moment later, several lines a write
            await asyncio.sleep(0.2)
            if waiting() == level:
                break
            level = waiting()
        await bad_requests(10)
        await asyncio.sleep(0.5)
        # The pipe is full: stderr takes nothing more. (How full depends on the writes: one of up to
        # 4 KiB goes in whole or waits, so the last may wait with up to 4 KiB of room left.)
        assert waiting() == level > 1024
        sim.agi_port = agi
        call = await asyncio.wait_for(sim.place_call(Scenario("112", talk=1)), 5)
        assert (call.status, call.reason) == ("ALLOW", "emergency")
        assert (await asyncio.wait_for(read_metrics(metrics), 5))["rating_log_lines_dropped_total"] == 0
        lines = await read_until("bad FastAGI request", 210)  # read at last: every line is there
        assert all(e["level"] == "warning" for e in lines if e["msg"] == "bad FastAGI request")
        assert not [e for e in lines if e["msg"] == "log lines dropped"]
    finally:
        proc.kill()
        await proc.wait()
        os.close(read_end)
        await sim.close()


def test_lines_a_stalled_sink_has_no_room_for_are_counted_and_said_once_it_takes_lines_again() -> None:
    import io
    import json
    import logging
    import threading

    from rating_engine import logs

    class Stalled(io.StringIO):
        """A sink that takes its first line, then blocks until released."""

        def __init__(self) -> None:
            super().__init__()
            self.entered, self.released = threading.Event(), threading.Event()

        def write(self, s: str) -> int:
            self.entered.set()
            assert self.released.wait(10)
            return super().write(s)

    sink = Stalled()
    log = logging.getLogger("rating_engine.test")
    with logs_set_up(stream=sink, room=3) as handler:
        log.info("line", extra={"n": 1})
        assert sink.entered.wait(5)  # the writer holds line 1, stuck in the sink
        for n in range(2, 11):
            log.info("line", extra={"n": n})  # 2-4 wait for it, 5-10 find no room: never a wait here
        assert logs.dropped_total() == 6 and sink.getvalue() == ""
        sink.released.set()
        handler.flush()
        lines = [json.loads(x) for x in sink.getvalue().splitlines()]
        assert [(e["msg"], e.get("n"), e.get("dropped")) for e in lines] == [
            ("line", 1, None),
            ("log lines dropped", None, 6),
            ("line", 2, None),
            ("line", 3, None),
            ("line", 4, None),
        ]
        assert lines[1]["level"] == "warning"
        log.info("line", extra={"n": 11})
        handler.close()  # as logging.shutdown does at exit: what was logged is written
        assert json.loads(sink.getvalue().splitlines()[-1])["n"] == 11 and logs.dropped_total() == 6


def test_an_exit_waits_once_for_a_sink_that_stays_stalled() -> None:
    import io
    import logging
    import threading
    import time

    from rating_engine import logs

    release = threading.Event()

    class Stuck(io.StringIO):
        def write(self, s: str) -> int:
            release.wait(10)
            return super().write(s)

    handler = logs.OffLoopHandler(Stuck())
    handler.setFormatter(logs.JsonFormatter())
    try:
        handler.emit(logging.makeLogRecord({"msg": "never written"}))
        started = time.monotonic()
        handler.flush(1.0)  # logging.shutdown at exit: flush, then close (which flushes again)
        handler.close()
        assert 1.0 <= time.monotonic() - started < 1.9  # twice would be 2.0 and more
    finally:
        release.set()


def test_the_last_line_is_written_when_the_exit_holds_the_handlers_lock_before_the_writer_took_it() -> None:
    """`logging.shutdown` holds each handler's lock while it flushes. The writer thread took that
    same lock to read the drop count, so a line it had picked up just before the exit waited out
    the exit's 5 s and was lost: `engine stopped`, once, in CI."""
    import io
    import json
    import logging
    import time
    import weakref

    from rating_engine import logs

    sink = io.StringIO()
    handler = logs.OffLoopHandler(sink)
    handler.setFormatter(logs.JsonFormatter())
    handler.acquire()  # the exit took the lock before the writer thread got to the line
    try:
        handler.handle(logging.makeLogRecord({"msg": "engine stopped"}))
        started = time.monotonic()
        logging.shutdown([weakref.ref(handler)])
        waited = time.monotonic() - started
        written = sink.getvalue()  # before the lock is let go: what the exit itself got out
    finally:
        handler.release()
    assert [json.loads(line)["msg"] for line in written.splitlines()] == ["engine stopped"]
    assert waited < logs.EXIT_WAIT / 2


def test_the_libraries_warnings_are_json_lines_too_and_a_secret_they_quote_is_masked() -> None:
    """Before, a library's warning went to Python's last-resort handler: plain text among the JSON
    lines, written in the event loop, and panoramisk's 'Fail to send' quotes the action, the AMI
    login with its secret among them."""
    import io
    import json
    import logging

    sink = io.StringIO()
    with logs_set_up("info", "json", stream=sink) as handler:
        login = {"Action": "Login", "Username": "engine", "Secret": "hunter2"}
        logging.getLogger("panoramisk.ami_protocol").info("sent %r", login)  # a library's info: not shown
        logging.getLogger("panoramisk.ami_protocol").error("Fail to send %r", login)
        sent = "Action: Login\r\nSecret: " + login["Secret"] + "\r\n"
        try:
            raise ConnectionError(sent)
        except ConnectionError:
            logging.getLogger("asyncpg.pool").exception("lost", extra={"password": "hunter2"})
        logging.getLogger("rating_engine.engine").info("ours", extra={"url": "postgresql://x?password=hunter2"})
        handler.flush()
    lines = [json.loads(x) for x in sink.getvalue().splitlines()]
    assert [(e["logger"], e["level"], e["msg"][:12]) for e in lines] == [
        ("panoramisk.ami_protocol", "error", "Fail to send"),
        ("asyncpg.pool", "error", "lost"),
        ("rating_engine.engine", "info", "ours"),
    ]
    assert "hunter2" not in sink.getvalue() and "'Username': 'engine'" in lines[0]["msg"]
    assert "Secret: ***" in lines[1]["exc"] and lines[1]["password"] == "***"


def test_a_line_that_cannot_be_formatted_is_said_through_the_queue_not_printed_by_the_loop(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`Handler.handleError` prints a traceback to stderr from the thread that logged: the event
    loop's, on the very pipe the handler's thread exists to keep it off."""
    import io
    import json
    import logging

    sink = io.StringIO()
    with logs_set_up("info", "json", stream=sink) as handler:
        logging.getLogger("somelib").error("%d calls", "not a number")  # a library's bug
        logging.getLogger("rating_engine.engine").info("after it")
        handler.flush()
    lines = [json.loads(x) for x in sink.getvalue().splitlines()]
    assert [e["msg"] for e in lines] == ["a log line could not be formatted", "after it"]
    assert lines[0]["from_logger"] == "somelib" and lines[0]["level"] == "error"
    assert lines[0]["source"].rsplit(":", 1)[0] == __file__  # where the bad call is
    assert "TypeError" in lines[0]["error"] and capsys.readouterr().err == ""
