"""One engine per node on a shared PostgreSQL: a session-level advisory lock, held for as long as
the engine runs, on a connection of its own.

An engine reconciles the reservations noted with its node: those whose channel its Asterisk no
longer shows are settled as gone (estimated, up to their deadline). Two PBXes whose engines were
given the same node (a copied config file) would each settle the other's live calls that way. So
the second engine to start as a node refuses to; on one machine the spool's lock says the same
before the ledger is even opened.

The lock goes with its session: when the engine's process dies, the server sees the socket close
and lets go at once; when the engine's machine or its network goes, TCP keepalives set on the
session (~40 s) end it. While the engine runs, the session is checked every few seconds and taken
again after it was lost (a server restart, a cut): if another engine holds the node by then, that
is logged as an error and counted, and this engine goes on with the calls it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import Any

import asyncpg

log = logging.getLogger("rating_engine.ledger")

LOCK_CLASS = 0x72617465
"""The first key of a node's lock (the second is its name's hash); two int4 keys, a key space
apart from the one-bigint lock of the migrations."""
CHECK_EVERY = 5.0
KEEPALIVE = {"tcp_keepalives_idle": "20", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "4"}
LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.OperatorInterventionError,
    OSError,
    TimeoutError,
)
"""The server or the way to it is gone (the driver's too: a batch that met it did not happen)."""
_HOLDER = (
    "SELECT a.client_addr::text AS addr, a.application_name AS app, a.backend_start AS since"
    " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory'"
    " AND l.classid = $1::int4::oid AND l.objid = $2::int4::oid AND l.objsubid = 2 AND l.granted"
)


def node_key(node: str) -> int:
    """The node's name as a signed 32-bit key (its hash: stable across servers and versions)."""
    return int.from_bytes(hashlib.blake2b(node.encode(), digest_size=4).digest(), "big", signed=True)


class NodeHold:
    def __init__(self, dsn: str, node: str, *, check_every: float = CHECK_EVERY, connect_timeout: float = 10.0) -> None:
        self.dsn, self.node, self.check_every, self.connect_timeout = dsn, node, check_every, connect_timeout
        self._conn: Any = None
        self._watch: asyncio.Task[None] | None = None
        self.conflicts = 0
        """Times the node was found held by another engine after this one had lost its session."""

    @property
    def held(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def take(self) -> str:
        """'' once held; else who holds it, in words (raises what connecting raises)."""
        conn = await asyncpg.connect(
            self.dsn,
            timeout=self.connect_timeout,
            server_settings={"application_name": f"rating-engine {self.node}"[:63], **KEEPALIVE},
        )
        try:
            key = node_key(self.node)
            if await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", LOCK_CLASS, key):
                self._conn, conn = conn, None
                return ""
            r = await conn.fetchrow(_HOLDER, LOCK_CLASS, key)
        finally:
            if conn is not None:
                await conn.close()
        if r is None:  # let go between the two statements
            return "another session (it has just let go: try again)"
        since = f"{r['since']:%Y-%m-%d %H:%M:%S %Z}".strip()
        return f"a session from {r['addr'] or 'this server'} ({r['app'] or 'no name'}) since {since}"

    def watch(self) -> None:
        """Check the session every `check_every` seconds and take the node again once it is lost."""
        if self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(self._keep())

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.check_every)
            try:
                if self.held:
                    await self._conn.fetchval("SELECT 1", timeout=self.connect_timeout)  # a silent cut too
                    continue
            except Exception:  # lost: a restart, a cut, a terminated session; taken again below
                pass
            self._drop()
            try:
                holder = await self.take()
            except (asyncpg.PostgresError, *LOST):
                continue  # the server is away: the ledger's own calls say so; tried again
            except Exception:  # never let the watch end: the node would go unguarded
                log.exception("node lock not taken again: tried again", extra={"node": self.node})
                continue
            if holder:
                self.conflicts += 1
                log.error(
                    "another engine holds this node: give each PBX's engine its own [engine] node",
                    extra={"node": self.node, "holder": holder},
                )
            else:
                log.info("node held again", extra={"node": self.node})

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    async def let_go(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await asyncio.wait_for(conn.close(), 5)
            except (*LOST, asyncio.CancelledError):
                conn.terminate()
