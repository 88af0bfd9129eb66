"""A small FastAGI server on `asyncio.Protocol` (panoramisk's spins on an early EOF).

Asterisk has no read timeout on FastAGI: a stalled engine holds the call in the dialplan. So
every request is answered within `answer_timeout`: if the route's handler is late or fails,
the fallback answers instead (the engine's fallback still lets emergency numbers through).
A client that closes early, sends garbage, or never finishes its environment costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

from ..contract import Variables
from .agi import MAX_ENV_BYTES, AgiProtocolError, AgiReply, AgiRequest, ReplyReader, parse_env, set_variable

MAX_REPLY_BYTES = 8192
"""Longer than any reply line Asterisk writes (a 520 usage line is under 200 bytes)."""
Handler = Callable[[AgiRequest], Awaitable[Variables]]
Fallback = Callable[[AgiRequest, str], Variables]
log = logging.getLogger("rating_engine.agi")


@dataclass(slots=True)
class AgiStats:
    requests: int = 0
    answered: int = 0
    fallbacks: int = 0
    bad_requests: int = 0
    hangups: int = 0


class FastAgiServer:
    def __init__(
        self,
        routes: dict[str, Handler],
        fallback: Fallback,
        *,
        answer_timeout: float = 2.0,
        reply_timeout: float = 5.0,
        env_timeout: float = 5.0,
        on_latency: Callable[[float], None] | None = None,
    ) -> None:
        self.routes = routes
        self.fallback = fallback
        self.answer_timeout = answer_timeout
        self.reply_timeout = reply_timeout
        self.env_timeout = env_timeout
        self.on_latency = on_latency
        self.stats = AgiStats()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 4573, *, reuse_port: bool = False) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _AgiConnection(self),
            host,
            port,
            reuse_address=True,
            reuse_port=reuse_port or None,
            backlog=1024,  # Asterisk opens a connection per call: a short backlog means 1 s SYN retries
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def close(self) -> None:
        await self.stop_accepting()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.answer_timeout + self.reply_timeout)

    async def answer(self, request: AgiRequest) -> tuple[Variables, bool]:
        """The variables for a request and whether they came from the handler (not the fallback)."""
        handler = self.routes.get(request.script)
        if handler is None:
            return self.fallback(request, "no_route"), False
        try:
            async with asyncio.timeout(self.answer_timeout):  # in this task: wait_for would make another
                return await handler(request), True
        except TimeoutError:
            log.error("authorize timed out", extra={"uniqueid": request.uniqueid})
            return self.fallback(request, "timeout"), False
        except Exception:
            log.exception("authorize failed", extra={"uniqueid": request.uniqueid})
            return self.fallback(request, "error"), False


class _AgiConnection(asyncio.Protocol):
    """One FastAGI conversation: the environment, the handler's task, then the SET VARIABLEs.

    The commands go one at a time, each when the reply to the one before arrives: the exchange
    is a few callbacks and one timer per command, not a coroutine woken through a queue with a
    timeout scope per reply (that cost the bare server a fifth of its CPU per request). Each
    command is written after the rest of the loop's turn, not from the callback that made it
    ready: the turn's reads, and the answers decided in it, then run back to back and its writes
    together (a fifth less CPU per request for the bare server, a tenth for the engine's: see
    docs/performance.md). The handler's task waits for `finished`, so `close()` still lets
    conversations in flight end.
    """

    def __init__(self, server: FastAgiServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.env_done = False
        self.reader = ReplyReader()
        self.closed = False
        self.timer: asyncio.TimerHandle | None = None
        """The environment's deadline, then each reply's."""
        self.started = time.perf_counter()
        self.uniqueid = ""
        self.commands: list[tuple[str, bytes]] = []
        """What is left to send, last first: (variable, its SET VARIABLE line)."""
        self.waiting: str | None = None
        """The variable whose reply is awaited."""
        self.finished: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.timer = asyncio.get_running_loop().call_later(self.server.env_timeout, self._abort)

    def _abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.env_done:
            self._feed_replies(data)
            return
        self.buffer += data
        end = self.buffer.find(b"\n\n")
        end_crlf = self.buffer.find(b"\r\n\r\n")
        if end < 0 and end_crlf < 0:
            if len(self.buffer) > MAX_ENV_BYTES:
                self.server.stats.bad_requests += 1
                self._abort()
            return
        cut, skip = (end, 2) if end_crlf < 0 or (0 <= end < end_crlf) else (end_crlf, 4)
        block, rest = bytes(self.buffer[:cut]), bytes(self.buffer[cut + skip :])
        self.buffer.clear()
        self.env_done = True
        self._cancel_timer()
        try:
            request = parse_env(block)
        except AgiProtocolError as exc:
            self.server.stats.bad_requests += 1
            log.warning("bad FastAGI request", extra={"error": str(exc)})
            self._abort()
            return
        self.server.stats.requests += 1
        self.uniqueid = request.uniqueid
        loop = asyncio.get_running_loop()
        self.finished = loop.create_future()
        task = loop.create_task(self._serve(request))
        self.server._tasks.add(task)
        task.add_done_callback(self.server._tasks.discard)
        if rest:
            self._feed_replies(rest)

    def _feed_replies(self, data: bytes) -> None:
        start = len(self.buffer)  # only the new bytes can hold a newline
        self.buffer += data
        while True:
            nl = self.buffer.find(b"\n", start)
            if nl < 0:
                if len(self.buffer) > MAX_REPLY_BYTES:  # a reply line no Asterisk sends: a flood
                    self.server.stats.bad_requests += 1
                    self.buffer.clear()
                    self._abort()
                return
            line = self.buffer[:nl].decode("utf-8", "replace")
            del self.buffer[: nl + 1]
            start = 0
            reply = self.reader.feed(line)
            if self.waiting is None:
                continue  # nothing asked yet (a HANGUP is remembered by the reader)
            if reply is not None:
                self._replied(reply)
            elif self.reader.hangup_seen:
                self._end(hangup=True)  # it sends nothing more after Asterisk's HANGUP

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        if self.waiting is not None:
            self._end(hangup=True)  # else the handler is still at work: `_send` will see it closed

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    async def _serve(self, request: AgiRequest) -> None:
        variables, from_handler = await self.server.answer(request)
        if not from_handler:
            self.server.stats.fallbacks += 1
        if self.server.on_latency is not None:
            self.server.on_latency(time.perf_counter() - self.started)
        try:
            self.commands = [(name, set_variable(name, value)) for name, value in reversed(variables)]
        except ValueError:
            log.exception("not a channel variable", extra={"uniqueid": request.uniqueid})
            self._end(hangup=None)
        else:
            asyncio.get_running_loop().call_soon(self._send)  # after the rest of the turn: see the class
        assert self.finished is not None
        await self.finished  # the conversation's end, for `close()`

    def _send(self) -> None:
        """The next command, or the end of the conversation."""
        if self.closed or self.reader.hangup_seen:
            self._end(hangup=bool(self.commands))
            return
        if not self.commands:
            self._end(hangup=False)
            return
        name, line = self.commands.pop()
        assert self.transport is not None
        self.transport.write(line)
        self.waiting = name
        self.timer = asyncio.get_running_loop().call_later(self.server.reply_timeout, self._no_reply)

    def _replied(self, reply: AgiReply) -> None:
        self._cancel_timer()
        if reply.dead:
            self._end(hangup=True)
            return
        if not reply.ok:
            log.warning("AGI command refused", extra={"uniqueid": self.uniqueid, "code": reply.code})
        self.waiting = None
        asyncio.get_running_loop().call_soon(self._send)  # after this turn's reads, as in `_serve`

    def _no_reply(self) -> None:
        self.timer = None
        log.warning("no AGI reply", extra={"uniqueid": self.uniqueid, "variable": self.waiting})
        self._end(hangup=None)

    def _end(self, *, hangup: bool | None) -> None:
        """Count the conversation (answered, or hung up; None: neither) and close it, once."""
        if self.finished is None or self.finished.done():
            return
        stats = self.server.stats
        if hangup:
            stats.hangups += 1
        elif hangup is False:
            stats.answered += 1
        self.waiting = None
        self.commands.clear()
        self._cancel_timer()
        self.finished.set_result(None)
        self._abort()
