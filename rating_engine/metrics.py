"""Prometheus text-format metrics on a local HTTP port: authorizations by outcome, latency,
live calls, reservations and the AMI link."""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Callable

BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Histogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.n += 1

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, c in zip(BUCKETS, self.counts, strict=False):
            running += c
            out.append(f'{name}_bucket{{le="{bound}"}} {running}')
        out += [f'{name}_bucket{{le="+Inf"}} {self.n}', f"{name}_sum {self.total:.6f}", f"{name}_count {self.n}"]
        return out


class Metrics:
    def __init__(self, collect: Callable[[], dict[str, object]]) -> None:
        self.latency = Histogram()
        self.collect = collect
        self._server: asyncio.Server | None = None

    def render(self) -> str:
        data = self.collect()
        lines = ["# TYPE rating_authorizations_total counter"]
        for outcome, n in sorted(dict(data.get("outcomes", {})).items()):  # type: ignore[call-overload]
            lines.append(f'rating_authorizations_total{{outcome="{outcome}"}} {n}')
        lines.append("# TYPE rating_authorize_seconds histogram")
        lines += self.latency.lines("rating_authorize_seconds")
        for name, kind in (
            ("live_calls", "gauge"),
            ("settled_total", "counter"),
            ("released_total", "counter"),
            ("extended_total", "counter"),
            ("estimated_total", "counter"),
            ("cdr_mismatches_total", "counter"),
            ("warnings_total", "counter"),
            ("velocity_alerts_total", "counter"),
            ("ami_connected", "gauge"),
            ("ami_logins_total", "counter"),
            ("ami_login_failures_total", "counter"),
            ("accept_errors_total", "counter"),
            ("agi_fallbacks_total", "counter"),
        ):
            lines += [f"# TYPE rating_{name} {kind}", f"rating_{name} {int(data.get(name, 0))}"]  # type: ignore[call-overload]
        return "\n".join(lines) + "\n"

    async def serve(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._handle, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
            if path == b"/metrics":
                body, status = self.render().encode(), b"200 OK"
            else:
                body, status = b"not found\n", b"404 Not Found"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain; version=0.0.4\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
