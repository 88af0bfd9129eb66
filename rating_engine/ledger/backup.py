"""A copy of a SQLite ledger taken while the engine runs, that a crash never leaves half-made, and
its way back.

Copying the file with `cp` while the engine writes gives a torn copy (the last commits are in the
-wal file, and a page may change under the copy). SQLite's online backup reads one consistent
snapshot inside a read transaction, which in WAL mode holds up no writer: the engine goes on
answering while it runs. The copy is written under a temporary name beside the destination, made
one self-contained file (a rollback journal, no -wal), checked (SQLite's `integrity_check`, then
the ledger's own check), synced, then renamed, so the destination is either the whole copy or
absent. Like the ledger, it is readable by its owner only. A PostgreSQL ledger is PostgreSQL's to
back up (`pg_dump`, or its base backups and WAL archiving).

A restore puts such a copy in the ledger's place, only while nothing has the ledger open: its
`-wal` and `-shm` files exist while a connection is open (or after a crash), and SQLite would apply
a -wal file left there to the restored copy. The copy is checked the same way before it replaces
anything, and the ledger it replaces is kept beside it under another name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from ..durable import sync_dir
from . import programs as P
from .models import CheckProblem, LedgerError
from .sqlite import run_program_sync


@dataclass(frozen=True, slots=True)
class Copied:
    size: int
    accounts: int
    problems: list[CheckProblem]
    """What `ledger check` finds in the copy: a faithful copy of a ledger that has them."""
    replaced: Path | None = None
    """A restore's: where the ledger it replaced now is (None where there was none)."""


def backup_sqlite(source: Path, dest: Path) -> Copied:
    """Copy the ledger at `source` to `dest`, a name not yet taken in an existing directory. Raises
    LedgerError, with nothing left at `dest`, on any failure."""
    if not source.is_file():
        raise LedgerError(f"no ledger at {source}")
    if dest.exists() or dest.is_symlink():
        raise LedgerError(f"{dest} exists: a backup never writes over a file, name a new one")
    if not dest.parent.is_dir():
        raise LedgerError(f"no directory {dest.parent} for the backup")
    partial = _claim(dest.parent / f".{dest.name}.partial", "backup")
    try:
        src = sqlite3.connect(f"file:{source}?mode=rw", uri=True)  # never creates a ledger that is not there
        try:
            src.execute("PRAGMA busy_timeout = 10000")  # as the engine's: a checkpoint may hold it a moment
            with contextlib.closing(sqlite3.connect(partial)) as dst:
                src.backup(dst)  # one step: one snapshot, whatever commits meanwhile
        finally:
            src.close()
        accounts, problems = _settle(partial, str(source))
        os.rename(partial, dest)
        sync_dir(dest.parent)
    except (OSError, sqlite3.Error, LedgerError) as exc:
        _remove(partial)
        raise _said(exc, f"backup of {source} to {dest}") from None
    return Copied(dest.stat().st_size, accounts, problems)


def restore_sqlite(backup: Path, ledger: Path) -> Copied:
    """Put the copy at `backup` in the place of the ledger at `ledger` (or where none is yet).
    Raises LedgerError, with the ledger untouched, when the ledger is open or the copy is not a
    sound SQLite file."""
    if not backup.is_file():
        raise LedgerError(f"no backup at {backup}")
    if not ledger.parent.is_dir():
        raise LedgerError(f"no directory {ledger.parent} for the ledger")
    beside = [p.name for p in (Path(f"{ledger}-wal"), Path(f"{ledger}-shm")) if p.exists()]
    if beside:
        raise LedgerError(
            f"the ledger {ledger} is open ({' and '.join(beside)} beside it): stop the engine and the page "
            "first; if neither runs, it was not closed cleanly: run `rating-engine ledger check` once to close it"
        )
    partial = _claim(ledger.parent / f".{ledger.name}.restoring", "restore")
    kept: Path | None = None
    try:
        with open(partial, "wb") as out, open(backup, "rb") as src:
            shutil.copyfileobj(src, out)
        accounts, problems = _settle(partial, str(backup))
        if ledger.exists():
            kept = ledger.with_name(f"{ledger.name}.before-restore-{time.strftime('%Y%m%dT%H%M%S')}")
            os.link(ledger, kept)  # a second name for it, never over a file of that name
        os.rename(partial, ledger)
        sync_dir(ledger.parent)
    except (OSError, sqlite3.Error, LedgerError) as exc:
        _remove(partial)
        if kept is not None and kept.exists() and ledger.exists() and os.path.samefile(kept, ledger):
            kept.unlink()  # the ledger was not replaced: its second name goes
        raise _said(exc, f"restore of {backup} to {ledger}") from None
    return Copied(ledger.stat().st_size, accounts, problems, kept)


def _claim(partial: Path, what: str) -> Path:
    """The temporary name, made 0600 and ours alone: two runs at once must not share it."""
    try:
        os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        raise LedgerError(f"{partial} exists: another {what} is running, or one was cut; remove it") from None
    except OSError as exc:
        raise LedgerError(f"{what} cannot write {partial}: {exc}") from None
    return partial


def _settle(path: Path, origin: str) -> tuple[int, list[CheckProblem]]:
    """Make the copy at `path` one self-contained file, check it, and sync it: (accounts, problems)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode = DELETE")  # a WAL file folded in; no -wal beside it from now
        (verdict,) = conn.execute("PRAGMA integrity_check").fetchone()
        if verdict != "ok":
            raise LedgerError(f"the copy of {origin} fails SQLite's integrity check: {verdict}")
        try:
            problems = run_program_sync(conn.cursor(), P.check())
            (accounts,) = conn.execute("SELECT COUNT(*) FROM accounts").fetchone()
        except sqlite3.OperationalError as exc:  # no such table: not a ledger
            raise LedgerError(f"{origin} is not a ledger: {exc}") from None
    with open(path, "rb") as f:
        os.fsync(f.fileno())
    return int(accounts), problems


def _remove(partial: Path) -> None:
    for leftover in (partial, *(Path(f"{partial}{end}") for end in ("-journal", "-wal", "-shm"))):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


def _said(exc: BaseException, what: str) -> LedgerError:
    return exc if isinstance(exc, LedgerError) else LedgerError(f"{what} failed: {exc}")
