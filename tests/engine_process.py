"""A `rating-engine run` process for the tests: its config file, its start (awaited until it has
started and reconciled), its structured log lines kept for the test to read, SIGKILL and SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from .conftest import OFFICE_FR, ROOT

SECRET = "engine-process"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def read_metrics(port: int) -> dict[str, float]:
    """The metrics endpoint's samples, by name with labels."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    body = (await reader.read()).decode().split("\r\n\r\n", 1)[1]
    writer.close()
    return {
        name: float(value)
        for name, value in (line.rsplit(" ", 1) for line in body.splitlines() if line and line[0] != "#")
    }


class Engine:
    def __init__(
        self,
        node: str,
        url: str,
        ami_port: int,
        tmp: Path,
        account: str = "shared",
        extra: str = "",
        metrics: bool = False,
        agi_port: int = 0,
        reuse_port: bool = False,
    ) -> None:
        self.node, self.agi_port = node, agi_port or free_port()
        self.metrics_port = free_port() if metrics else 0
        self.config = tmp / f"{node}.toml"
        self.config.write_text(
            f'[engine]\nnode = "{node}"\nquota_seconds = 10\nrenew_margin = 3\nring_timeout = 3\n'
            f'warning_seconds = 0\nfinal_warning_seconds = 0\nspool_file = "{tmp}/{node}.spool"\n{extra}'
            f'[agi]\nbind = "127.0.0.1:{self.agi_port}"\naccount = "fixed:{account}"\n'
            f"reuse_port = {'true' if reuse_port else 'false'}\n"
            f'[ami]\nport = {ami_port}\n[ledger]\nurl = "{url}"\n'
            f'[tariffs]\nplans = ["{OFFICE_FR}"]\n'
            f'[metrics]\nbind = "{f"127.0.0.1:{self.metrics_port}" if metrics else ""}"\n'
        )
        self.proc: asyncio.subprocess.Process | None = None
        self.logs: list[dict[str, Any]] = []

    async def _spawn(self) -> asyncio.subprocess.Process:
        env = {**os.environ, "RATING_ENGINE_AMI_SECRET": SECRET}
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rating_engine.cli", "run", "--config", str(self.config), cwd=ROOT, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip

    async def refused(self) -> tuple[int, list[str]]:
        """Run it expecting it not to start: its exit code and the lines it printed that are not logs."""
        proc = await self._spawn()
        try:
            _, err = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode is not None
        return proc.returncode, [x for x in err.decode().splitlines() if not x.startswith("{")]

    async def start(self) -> None:
        self.proc = await self._spawn()
        seen: set[object] = set()
        assert self.proc.stderr is not None
        while not {"engine started", "reconciled with Asterisk"} <= seen:
            line = await asyncio.wait_for(self.proc.stderr.readline(), 30)
            assert line, f"{self.node} exited early"
            self.logs.append(json.loads(line))
            seen.add(self.logs[-1].get("msg"))
        self._reader = asyncio.get_running_loop().create_task(self._keep_logs())

    async def _keep_logs(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            try:
                self.logs.append(json.loads(line))
            except ValueError:  # not one of our log lines (a library printing): kept as it is
                self.logs.append({"msg": "", "raw": line.decode(errors="replace")})

    def said(self, msg: str) -> list[dict[str, Any]]:
        return [x for x in self.logs if x.get("msg") == msg]

    async def says(self, msg: str, timeout: float = 10) -> list[dict[str, Any]]:
        """The lines with that message, once there is one (the engine logs after Asterisk acts)."""
        for _ in range(int(timeout / 0.05)):
            if found := self.said(msg):
                return found
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.node} never said {msg!r}; it said {[x.get('msg') or x for x in self.logs]}")

    async def metrics(self) -> dict[str, float]:
        return await read_metrics(self.metrics_port)

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
