"""`rating-engine ledger backup` and `restore`: a SQLite ledger copied while the engine writes,
whole or not at all, and put back only while nothing has it open.

A `cp` of a ledger in WAL mode under load is torn (the last commits sit in the -wal file); the
command must give one consistent snapshot that `ledger check` accepts, never write over a file,
never leave half a copy behind, and say in one line why it refused. A restore must never replace
a ledger an engine has open, nor with a damaged file, and keeps the ledger it replaces.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

from rating_engine.cli import main
from rating_engine.ledger import AccountSettings, CallDetails, make_ledger

from .helpers import EUR, run


def _names(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


async def test_a_backup_taken_while_calls_settle_is_one_consistent_ledger(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    ledger = make_ledger(url)
    await ledger.open()
    await ledger.create_account("acme", AccountSettings("office-fr", "EUR"))
    await ledger.topup("acme", 1000 * EUR, "opening")
    settled = 0
    stop = asyncio.Event()

    async def calls() -> None:
        nonlocal settled
        while not stop.is_set():
            call_id = f"n1:{settled}"
            assert (await ledger.reserve(call_id, "acme", "201", 10_000, now=1_795_535_109)).ok
            details = CallDetails(started_at=1_795_535_109, ended_at=1_795_535_130, billable_seconds=21)
            await ledger.settle(call_id, 7_001, details, now=1_795_535_130)
            settled += 1

    writer = asyncio.create_task(calls())
    try:
        while settled < 50:
            await asyncio.sleep(0.01)
        backups = tmp_path / "backups"
        backups.mkdir()
        code = await asyncio.to_thread(main, ["ledger", "backup", str(backups / "monday.sqlite3"), "--db", url])
        during = settled
    finally:
        stop.set()
        await writer
        await ledger.close()
    assert code == 0 and during > 50  # the calls went on while it copied
    assert _names(backups) == {"monday.sqlite3"}  # no partial file, no -wal beside it
    assert os.stat(backups / "monday.sqlite3").st_mode & 0o777 == 0o600
    copy = make_ledger(f"sqlite:///{backups / 'monday.sqlite3'}")
    await copy.open()
    try:
        assert await copy.check() == []
        calls_copied = len(await copy.activity("acme"))
        assert 50 <= calls_copied <= settled
        account = await copy.account("acme")
        assert account.balance == 1000 * EUR - 7_001 * calls_copied and account.reserved in (0, 10_000)
    finally:
        await copy.close()


@pytest.fixture
def db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    plan = Path(__file__).parent.parent / "tariffs" / "office-fr.toml"
    assert run(capsys, "account", "create", "acme", "--plan", str(plan), "--db", url)[0] == 0
    return url


def test_the_copy_says_what_it_holds_and_is_checked(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "ledger", "backup", str(tmp_path / "copy.sqlite3"), "--db", db)
    assert code == 0 and err == ""
    assert out.startswith(f"backed up 1 account(s) to {tmp_path / 'copy.sqlite3'} (") and out.endswith("copy: ok\n")


def test_a_backup_never_writes_over_a_file_nor_outside_a_directory(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = tmp_path / "taken.sqlite3"
    taken.write_bytes(b"last week's backup")
    ledger = db.removeprefix("sqlite:///")
    for dest, says in (
        (str(taken), "exists: a backup never writes over a file"),
        (ledger, "exists: a backup never writes over a file"),
        (str(tmp_path / "no-such-dir" / "x.sqlite3"), "no directory"),
    ):
        before = _names(tmp_path)
        code, out, err = run(capsys, "ledger", "backup", dest, "--db", db)
        assert (code, out) == (2, "") and err.count("\n") == 1 and says in err, err
        assert _names(tmp_path) == before
    assert taken.read_bytes() == b"last week's backup"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://postgres:hunter22@127.0.0.1/ledger", "(PostgreSQL: pg_dump)"),
        ("sqlite:///", "is not one"),
        ("sqlite:///{tmp}/none.sqlite3", "no ledger at"),
    ],
)
def test_what_is_not_a_sqlite_ledger_file_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str, says: str
) -> None:
    code, out, err = run(capsys, "ledger", "backup", str(tmp_path / "x.sqlite3"), "--db", url.format(tmp=tmp_path))
    assert (code, out) == (2, "") and err.count("\n") == 1 and says in err and "hunter22" not in err
    assert _names(tmp_path) == set()


def test_a_copy_that_fails_leaves_nothing_behind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A damaged ledger: SQLite refuses to read it, or its copy fails the integrity check; either way
    neither the backup nor its partial file is left to be mistaken for a good copy."""
    damaged = tmp_path / "damaged.sqlite3"
    with sqlite3.connect(damaged) as conn:
        conn.execute("CREATE TABLE t (x TEXT)")
        conn.executemany("INSERT INTO t VALUES (?)", [("x" * 500,) for _ in range(200)])
        conn.execute("CREATE INDEX i ON t (x)")
    data = bytearray(damaged.read_bytes())
    data[4096 * 3 : 4096 * 3 + 64] = b"\xff" * 64  # a page of the index, scribbled over
    damaged.write_bytes(bytes(data))
    backups = tmp_path / "backups"
    backups.mkdir()
    code, out, err = run(capsys, "ledger", "backup", str(backups / "x.sqlite3"), "--db", f"sqlite:///{damaged}")
    assert (code, out) == (2, "") and err.count("\n") == 1 and "Traceback" not in err, err
    assert _names(backups) == set()


def _balance(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT balance FROM accounts WHERE id = 'acme'").fetchone()[0])


def test_a_restore_brings_the_backup_back_and_keeps_the_ledger_it_replaced(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = Path(db.removeprefix("sqlite:///"))
    assert run(capsys, "account", "topup", "acme", "10", "--reference", "monday", "--db", db)[0] == 0
    assert run(capsys, "ledger", "backup", str(tmp_path / "monday.sqlite3"), "--db", db)[0] == 0
    assert run(capsys, "account", "topup", "acme", "5", "--reference", "tuesday", "--db", db)[0] == 0
    code, out, err = run(capsys, "ledger", "restore", str(tmp_path / "monday.sqlite3"), "--db", db)
    assert (code, err) == (0, "") and "ledger check: ok" in out, err
    [kept] = [p for p in tmp_path.iterdir() if ".before-restore-" in p.name]
    assert f"the ledger it replaced is {kept}" in out
    assert _balance(ledger) == 10 * EUR and _balance(kept) == 15 * EUR
    assert os.stat(ledger).st_mode & 0o777 == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial file left


def test_a_restore_onto_a_new_machine_needs_no_ledger_there(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "ledger", "backup", str(tmp_path / "copy.sqlite3"), "--db", db)[0] == 0
    fresh = tmp_path / "new-host"
    fresh.mkdir()
    code, out, _ = run(capsys, "ledger", "restore", str(tmp_path / "copy.sqlite3"), "--db", f"sqlite:///{fresh}/l.db")
    assert code == 0 and "replaced" not in out and _names(fresh) == {"l.db"}


async def test_a_restore_never_replaces_a_ledger_something_has_open(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = Path(db.removeprefix("sqlite:///"))
    assert (await asyncio.to_thread(run, capsys, "ledger", "backup", str(tmp_path / "copy.sqlite3"), "--db", db))[
        0
    ] == 0
    engine = make_ledger(db)  # as the engine's: open, in WAL mode
    await engine.open()
    try:
        before = _names(tmp_path)
        code, out, err = await asyncio.to_thread(
            run, capsys, "ledger", "restore", str(tmp_path / "copy.sqlite3"), "--db", db
        )
        assert (code, out) == (2, "") and "is open" in err and "stop the engine" in err and err.count("\n") == 1
        assert _names(tmp_path) == before and (await engine.account("acme")).id == "acme"
    finally:
        await engine.close()
    assert ledger.exists()


def test_a_damaged_backup_replaces_nothing(db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger = Path(db.removeprefix("sqlite:///"))
    original = ledger.read_bytes()
    for name, content in (("torn.sqlite3", original[: len(original) // 2]), ("junk.sqlite3", b"not a database" * 99)):
        (tmp_path / name).write_bytes(content)
        before = _names(tmp_path)
        code, out, err = run(capsys, "ledger", "restore", str(tmp_path / name), "--db", db)
        assert (code, out) == (2, "") and err.count("\n") == 1 and "Traceback" not in err, err
        assert _names(tmp_path) == before and ledger.read_bytes() == original
    code, _, err = run(capsys, "ledger", "restore", str(tmp_path / "none.sqlite3"), "--db", db)
    assert code == 2 and "no backup at" in err
