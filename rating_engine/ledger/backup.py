"""A copy of a SQLite ledger taken while the engine runs, that a crash never leaves half-made.

Copying the file with `cp` while the engine writes gives a torn copy (the last commits are in the
-wal file, and a page may change under the copy). SQLite's online backup reads one consistent
snapshot inside a read transaction, which in WAL mode holds up no writer: the engine goes on
answering while it runs. The copy is written under a temporary name beside the destination, checked
by SQLite (`integrity_check`), synced, then renamed, so the destination is either the whole copy or
absent. Like the ledger, it is readable by its owner only. A PostgreSQL ledger is PostgreSQL's to
back up (`pg_dump`, or its base backups and WAL archiving).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from ..durable import sync_dir
from .models import LedgerError


def backup_sqlite(source: Path, dest: Path) -> int:
    """Copy the ledger at `source` to `dest`, a name not yet taken in an existing directory; returns
    the copy's size in bytes. Raises LedgerError, with nothing left at `dest`, on any failure."""
    if not source.is_file():
        raise LedgerError(f"no ledger at {source}")
    if dest.exists() or dest.is_symlink():
        raise LedgerError(f"{dest} exists: a backup never writes over a file, name a new one")
    if not dest.parent.is_dir():
        raise LedgerError(f"no directory {dest.parent} for the backup")
    if dest.resolve() == source.resolve():
        raise LedgerError("the backup must be another file than the ledger")
    partial = dest.parent / f".{dest.name}.partial"
    try:
        os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        _copy(source, partial)
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        os.rename(partial, dest)
        sync_dir(dest.parent)
    except FileExistsError:
        raise LedgerError(f"{partial} exists: another backup to {dest} is running, or one was cut; remove it") from None
    except (OSError, sqlite3.Error, LedgerError) as exc:
        for leftover in (partial, *(Path(f"{partial}{end}") for end in ("-journal", "-wal", "-shm"))):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        if isinstance(exc, LedgerError):
            raise
        raise LedgerError(f"backup of {source} to {dest} failed: {exc}") from None
    return dest.stat().st_size


def _copy(source: Path, partial: Path) -> None:
    src = sqlite3.connect(f"file:{source}?mode=rw", uri=True)  # never creates a ledger that is not there
    try:
        src.execute("PRAGMA busy_timeout = 10000")  # as the engine's: a checkpoint may hold it a moment
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst)  # one step: one snapshot, whatever commits meanwhile
            dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file, no -wal beside it
            (verdict,) = dst.execute("PRAGMA integrity_check").fetchone()
            if verdict != "ok":
                raise LedgerError(f"the copy of {source} fails SQLite's integrity check: {verdict}")
        finally:
            dst.close()
    finally:
        src.close()
