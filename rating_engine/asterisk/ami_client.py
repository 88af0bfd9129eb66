"""The AMI client: panoramisk, with the gaps docs/asterisk.md lists closed in a thin layer.

- Events reach the engine through one plain callback feeding one queue, so they are handled
  in the order Asterisk sent them (panoramisk starts coroutine callbacks fire-and-forget).
- Every action has a timeout (actions sent while disconnected never complete otherwise).
- A watchdog pings and checks the reply; a silent link is closed and reconnected.
- Reconnects back off exponentially, and `close()` does not trigger one (panoramisk's does).
- After every login the `on_login` hook runs (the engine reconciles there); we do not rely on
  panoramisk's replay of queued actions on FullyBooted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from panoramisk import Manager

log = logging.getLogger("rating_engine.ami")
EventHandler = Callable[[Mapping[str, str]], Awaitable[None]]


class _Manager(Manager):  # type: ignore[misc]
    """panoramisk's Manager with backoff and a closing state."""

    pinger: Any

    def __init__(self, client: AmiClient, **config: Any) -> None:
        super().__init__(**config)
        self.client = client
        self.closing = False
        self.refused = False
        self.backoff = client.reconnect_min

    def connection_made(self, f: asyncio.Future[Any]) -> None:
        if self.closing:
            with contextlib.suppress(Exception):
                f.result()[0].close()
            return
        if f.exception() is not None:
            self.client.connected = False
            delay, self.backoff = self.backoff, min(self.backoff * 2, self.client.reconnect_max)
            log.warning("AMI connect failed; retrying", extra={"in_seconds": delay})
            self.loop.call_later(delay, self.connect)
            return
        super().connection_made(f)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connected = False
        self.client.connected = False
        self.client.logged_in.clear()
        if self.pinger:
            self.pinger.cancel()
            self.pinger = None
        if self.closing:
            return
        delay, self.backoff = self.backoff, min(self.backoff * 2, self.client.reconnect_max)
        if not self.refused:  # a refused login was logged as such
            log.error("AMI connection lost; reconnecting", extra={"in_seconds": delay})
        self.refused = False
        self.loop.call_later(delay, self.connect)

    def ping(self) -> None:  # our watchdog pings and checks replies
        self.pinger = None

    def login(self, future: asyncio.Future[Any]) -> bool:
        ok = bool(super().login(future))
        if not ok:
            # Never log the secret; say plainly what to check. Then retry with backoff: a fixed
            # manager.conf (and `manager reload`) is picked up without restarting the engine.
            self.client.login_failures += 1
            self.refused = True
            message = ""
            with contextlib.suppress(Exception):
                message = str(future.result().get("Message", ""))
            log.error(
                "AMI login refused: check ami.username and the secret against manager.conf; "
                "chargeable calls are refused until the engine is logged in",
                extra={"username": self.config.get("username", ""), "asterisk_says": message, "retry_in": self.backoff},
            )
            if self.protocol is not None:
                self.protocol.transport.close()
        return ok


class AmiClient:
    """Implements the engine's `Pbx` protocol over AMI."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret: str,
        on_event: EventHandler,
        on_login: Callable[[], Awaitable[object]] | None = None,
        *,
        on_pong: Callable[[Mapping[str, str], float], None] | None = None,
        action_timeout: float = 5.0,
        ping_interval: float = 10.0,
        reconnect_min: float = 0.5,
        reconnect_max: float = 30.0,
    ) -> None:
        self.on_event = on_event
        self.on_login_hook = on_login
        self.on_pong = on_pong
        """Told each Ping's reply (it carries Asterisk's time) and its round trip in seconds."""
        self.action_timeout = action_timeout
        self.ping_interval = ping_interval
        self.reconnect_min, self.reconnect_max = reconnect_min, reconnect_max
        self.connected = False
        self.logged_in = asyncio.Event()
        self.logins = 0
        self.login_failures = 0
        self.events: asyncio.Queue[Mapping[str, str]] = asyncio.Queue()
        self.manager = _Manager(
            self,
            host=host,
            port=port,
            username=username,
            secret=secret,
            events="on",
            ping_delay=3600,
            reconnect_timeout=reconnect_min,
            on_login=self._logged_in,
            loop=asyncio.get_running_loop(),
        )
        self.manager.register_event("*", self._enqueue)
        self._tasks: list[asyncio.Task[Any]] = []

    def _enqueue(self, _manager: Any, event: Any) -> None:
        self.events.put_nowait(dict(event))

    def _logged_in(self, _manager: Any) -> None:
        self.connected = True
        self.manager.backoff = self.reconnect_min
        self.logins += 1
        self.logged_in.set()
        log.info("AMI logged in", extra={"logins": self.logins})
        self.read_clock()  # before the first call, not a ping_interval later
        if self.on_login_hook is not None:
            self._spawn(self._run_login_hook())

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work` as a task `close` ends; those done are let go (each login makes two, and an
        engine runs for months across Asterisk's restarts)."""
        self._tasks = [t for t in self._tasks if not t.done()]
        self._tasks.append(asyncio.get_running_loop().create_task(work))

    async def _run_login_hook(self) -> None:
        assert self.on_login_hook is not None
        try:
            await self.on_login_hook()
        except Exception:
            log.exception("AMI login hook failed")

    async def start(self) -> None:
        self.manager.connect()
        self._spawn(self._pump())
        self._spawn(self._watchdog())

    async def wait_logged_in(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.logged_in.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def _pump(self) -> None:
        while True:
            event = await self.events.get()
            try:
                await self.on_event(event)
            except Exception:
                log.exception("handling an AMI event failed", extra={"event": event.get("Event", "")})

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            if not self.connected:
                continue
            if await self._ping() is None and self.manager.protocol is not None:
                log.error("AMI ping unanswered; closing the link to reconnect")
                self.manager.protocol.transport.close()

    def read_clock(self) -> None:
        """Read Asterisk's clock now (a Ping, whose reply `on_pong` is told of) rather than at the
        watchdog's next one."""
        if self.connected and self.on_pong is not None:
            self._spawn(self._ping())

    async def _ping(self) -> Any:
        """Ping; the reply, which `on_pong` is told of with its round trip, or None."""
        sent = time.monotonic()
        reply = await self.action({"Action": "Ping"})
        if reply is not None and self.on_pong is not None:
            self.on_pong(dict(reply), time.monotonic() - sent)
        return reply

    async def action(self, action: dict[str, str], as_list: bool = False) -> Any:
        """Send an action; None when it is not answered in time or we are not connected."""
        if not self.connected:
            return None
        try:
            return await asyncio.wait_for(self.manager.send_action(action, as_list=as_list), self.action_timeout)
        except (TimeoutError, ConnectionError, AttributeError):
            return None

    # -- the engine's Pbx protocol
    async def set_timeout(self, channel: str, seconds: int) -> bool:
        if seconds < 1:  # TIMEOUT(absolute)=0 would remove the deadline
            seconds = 1
        reply = await self.action(
            {"Action": "Setvar", "Channel": channel, "Variable": "TIMEOUT(absolute)", "Value": str(seconds)}
        )
        ok = reply is not None and str(reply.get("Response", "")).lower() == "success"
        if not ok:
            log.error("setting the deadline failed", extra={"channel": channel, "seconds": seconds})
        return ok

    async def play_warning(self, channel: str, digit: str) -> bool:
        """DTMF `digit` received on the caller's channel as if pressed: the features.conf entry plays
        the warning to the caller. Needs only write class `call` (app_senddtmf's PlayDTMF)."""
        reply = await self.action({"Action": "PlayDTMF", "Channel": channel, "Digit": digit, "Receive": "yes"})
        ok = reply is not None and str(reply.get("Response", "")).lower() == "success"
        if not ok:
            log.error("playing the warning failed", extra={"channel": channel})
        return ok

    async def live_channels(self) -> dict[str, str]:
        reply = await self.action({"Action": "CoreShowChannels"}, as_list=True)
        if reply is None:
            raise ConnectionError("CoreShowChannels unanswered")
        return {str(m.get("Uniqueid")): str(m.get("Channel", "")) for m in reply if m.get("Event") == "CoreShowChannel"}

    async def close(self) -> None:
        self.manager.closing = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self.manager.close()
