"""Settlements the ledger could not take, kept on the engine's own disk until it can.

A call that ends while the database is unreachable is still billed exactly: its settle (or the
release of a call never answered) is appended to this file and fsynced before the engine moves
on, and written to the ledger when it answers again — every few seconds while any wait, before
each reconciliation, and first thing after a restart. A settle is once per call id in the ledger
(a second finds the reservation gone and changes nothing), so an entry written again after a
crash between the ledger's commit and this file's rewrite is still billed once.

One JSON object per line. A torn last line (the engine or the machine stopped mid-append) is the
one entry that was never acknowledged: it is skipped, with a warning, and the call is reconciled
from Asterisk; the next entry appended starts on a line of its own.

The engine writes it off the event loop (`keep`, `drop`): the entries change at once in the loop,
and each write and fsync runs on the spool's own thread, in the order asked. A disk slow to
fsync then delays only the call being settled, never a FastAGI answer (emergency calls included),
for the reason the SQLite ledger has a thread of its own.

The file, like the reservations noted with its node, is one engine's alone: a running engine holds
a lock beside it (`claim`), so a second process started as the same node — several processes on one
port (`reuse_port`) sharing one config file, say — refuses to start instead of following, warning
and renewing the first one's calls a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from .durable import make_dirs, sync_dir
from .ledger import CallDetails

log = logging.getLogger("rating_engine.spool")


@dataclass(frozen=True, slots=True)
class Pending:
    kind: Literal["settle", "release"]
    call_id: str
    at: int
    cost: int = 0
    details: CallDetails = field(default_factory=CallDetails)

    def line(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":")) + "\n"

    @classmethod
    def parse(cls, line: str) -> Pending:
        raw = json.loads(line)
        if raw["kind"] not in ("settle", "release"):
            raise ValueError(f"unknown kind {raw['kind']!r}")
        return cls(raw["kind"], str(raw["call_id"]), int(raw["at"]), int(raw["cost"]), CallDetails(**raw["details"]))


class Spool:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.entries: list[Pending] = []
        self.spooled = 0
        """Entries appended since start."""
        self.written = 0
        """Entries the ledger took since start."""
        self.unsaved = 0
        """Entries held in memory only, since the file could not be written."""
        self._lock: int | None = None
        self._disk: ThreadPoolExecutor | None = None
        """One thread for the file's writes, so that they happen in the order asked."""

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def claim(self) -> bool:
        """Hold this spool's lock for as long as the process lives (the kernel lets it go even on
        SIGKILL); False if another process holds it. If the lock file cannot be made at all (a
        full or read-only disk), that is said and the engine goes on: the guard is not worth an
        engine that cannot start."""
        if self._lock is not None:
            return True
        try:
            make_dirs(self.path.parent)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            log.error("spool lock cannot be made", extra={"file": str(self.lock_path), "error": str(exc)})
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock = fd
        return True

    def let_go(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def load(self) -> list[Pending]:
        """What an earlier run left waiting (the file is this engine's alone: one per node)."""
        self.entries = []
        if not self.path.exists():
            return self.entries
        lines = self.path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                self.entries.append(Pending.parse(line))
            except (ValueError, KeyError, TypeError) as exc:
                torn = number == len(lines)
                log.warning(
                    "spool line skipped" + (" (torn by a crash mid-write)" if torn else ""),
                    extra={"file": str(self.path), "line": number, "error": str(exc)},
                )
        return self.entries

    async def keep(self, entry: Pending) -> None:
        """Durable before it returns, so the caller may forget the call — unless the engine's own
        disk refuses too (full, read-only): then the entry is kept in memory, said as an error, and
        the whole spool is written with the next entry or rewrite that the disk takes. (Lost only
        if the engine also dies meanwhile: the reservation then stays, and is reconciled.) The
        entry is in `entries` at once; its write and fsync run on the spool's thread."""
        await self._off_loop(self._save, entry, self._add(entry))

    async def drop(self, taken: list[Pending]) -> None:
        """Drop what the ledger took (from `entries` at once); the rest is rewritten whole (a new
        file, then a rename), on the spool's thread."""
        await self._off_loop(self._save_all, self._drop(taken))

    def _add(self, entry: Pending) -> list[Pending]:
        self.entries.append(entry)
        self.spooled += 1
        return list(self.entries)

    def _drop(self, taken: list[Pending]) -> list[Pending]:
        gone = {id(e) for e in taken}
        self.entries = [e for e in self.entries if id(e) not in gone]
        self.written += len(taken)
        return list(self.entries)

    def _save(self, entry: Pending, entries: list[Pending]) -> None:
        """Append `entry`, or write `entries` (all it is part of) whole if an earlier write failed."""
        try:
            if self.unsaved:
                self._rewrite(entries)
            else:
                self._append_line(entry.line().encode())
        except OSError as exc:
            self.unsaved += 1
            log.error(
                # also when only the new file's name could not be synced: its bytes are on disk,
                # but a crash of the machine could still take the file away
                "spool file cannot be written durably: the settlement is held in memory until the disk takes a write",
                extra={"file": str(self.path), "call_id": entry.call_id, "error": str(exc)},
            )

    def _save_all(self, entries: list[Pending]) -> None:
        try:
            self._rewrite(entries)
        except OSError as exc:  # the old file stays: what it still holds is billed once all the same
            log.error("spool file cannot be rewritten", extra={"file": str(self.path), "error": str(exc)})

    async def _off_loop(self, write: Callable[..., None], *args: object) -> None:
        if self._disk is None:
            self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        await asyncio.get_running_loop().run_in_executor(self._disk, write, *args)

    def _append_line(self, data: bytes) -> None:
        make_dirs(self.path.parent)
        try:
            fd, new = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600), True
        except FileExistsError:
            fd, new = os.open(self.path, os.O_RDWR | os.O_APPEND), False
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # after a line torn by a crash: this entry on a line of its own
            try:
                while data:
                    data = data[os.write(fd, data) :]
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)  # no torn line in the middle of the file
                raise
        finally:
            os.close(fd)
        if new:  # the file's fsync keeps its bytes, not its name in the directory
            sync_dir(self.path.parent)

    def _rewrite(self, entries: list[Pending]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            data = "".join(e.line() for e in entries).encode()
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, self.path)
        sync_dir(self.path.parent)
        self.unsaved = 0
