"""What a ledger holds, read without writing: for `rating-engine run --check`, before a restart.

Opening a ledger the usual way makes it when it is missing and brings its schema up to date; a
check must do neither, so this reads, read-only, the schema version and how many accounts are on
each plan (a newer schema's tables are not read: the engine would refuse it anyway).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from . import sqlite_file
from .models import LedgerError
from .schema import LATEST


@dataclass(frozen=True, slots=True)
class SchemaState:
    version: int | None
    """The ledger's schema version; None where there is no ledger yet."""
    plans: dict[str, int] = field(default_factory=dict)
    """How many accounts are on each plan: a plan no loaded file defines refuses their calls."""

    def said(self) -> str:
        if self.version is None:
            return "no ledger yet: made at the first start"
        if self.version < LATEST:
            return f"schema version {self.version}: brought to {LATEST} at the next start"
        if self.version > LATEST:
            return f"schema version {self.version}, newer than this rating-engine ({LATEST}): it would refuse to start"
        return f"schema version {self.version} (current)"

    @property
    def startable(self) -> bool:
        return self.version is None or self.version <= LATEST


async def schema_state(url: str) -> SchemaState:
    if url.startswith("sqlite:///"):
        path = sqlite_file(url)
        return SchemaState(None) if path is None or not path.exists() else _sqlite_state(str(path))
    if url.startswith(("postgresql://", "postgres://")):
        return await _postgres_state(url)
    raise LedgerError("unsupported ledger URL: use sqlite:///path or postgresql://…")


PLANS = "SELECT plan, COUNT(*) FROM accounts GROUP BY plan"


def _sqlite_state(path: str) -> SchemaState:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as exc:
        raise LedgerError(f"cannot open the ledger {path}: {exc}") from None
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_version'").fetchone() is None:
            return SchemaState(0)
        version = int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])
        plans = dict(conn.execute(PLANS).fetchall()) if 0 < version <= LATEST else {}
        return SchemaState(version, plans)
    except sqlite3.Error as exc:
        raise LedgerError(f"cannot read the ledger {path}: {exc}") from None
    finally:
        conn.close()


async def _postgres_state(url: str) -> SchemaState:
    import asyncpg

    from .postgres import CONNECT_TIMEOUT

    try:
        conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise LedgerError(f"cannot reach the ledger: {exc}") from None
    try:
        if await conn.fetchval("SELECT to_regclass('schema_version')") is None:
            return SchemaState(None)
        version = int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version"))
        plans = {r[0]: r[1] for r in await conn.fetch(PLANS)} if 0 < version <= LATEST else {}
        return SchemaState(version, plans)
    finally:
        await conn.close()
