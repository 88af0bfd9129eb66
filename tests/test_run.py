"""`rating-engine run` as a real process: starts, serves a call, says when it was held still,
stops cleanly on SIGTERM, logs structured JSON, and never prints the AMI secret."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from rating_engine.asterisk.simulator import AsteriskSimulator, Scenario
from rating_engine.clock import Clock

from .conftest import OFFICE_FR, ROOT

SECRET = "s3cret-not-for-logs"


async def test_run_serves_calls_and_stops_on_sigterm(tmp_path: Path) -> None:
    clock = Clock()
    sim = AsteriskSimulator(clock, agi_port=0, secret=SECRET)
    ami_port = await sim.start()
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        agi_port = s.getsockname()[1]
    config = tmp_path / "engine.toml"
    config.write_text(
        f'[engine]\naccount = "fixed:acme"\n[agi]\nbind = "127.0.0.1:{agi_port}"\n'
        f'[ami]\nport = {ami_port}\n[ledger]\nurl = "sqlite:///{tmp_path}/l.sqlite3"\n'
        f'[tariffs]\nplans = ["{OFFICE_FR}"]\n[metrics]\nbind = ""\n'
    )
    env = {**os.environ, "RATING_ENGINE_AMI_SECRET": SECRET}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rating_engine.cli", "run", "--config", str(config), cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        stderr = proc.stderr
        assert stderr is not None
        logs: list[dict[str, object]] = []

        async def read_until(done: Callable[[], bool], when: str) -> None:
            """Its lines, into `logs`, until `done()`; it must not exit meanwhile."""
            while not done():
                line = await asyncio.wait_for(stderr.readline(), 20)
                assert line, f"the engine exited {when}"
                logs.append(json.loads(line))

        # Ready when both are logged: the AGI listener is up ("engine started", after it is bound),
        # and the AMI login's reconciliation is done (it may come first).
        await read_until(
            lambda: {"engine started", "reconciled with Asterisk"} <= {e.get("msg") for e in logs}, "early"
        )
        sim.agi_port = agi_port
        call = await sim.place_call(Scenario("0612345678", talk=1))  # no such account in this ledger
        assert (call.status, call.reason) == ("DENY", "unknown_account")
        emergency = await sim.place_call(Scenario("112", talk=1))
        assert (emergency.status, emergency.reason) == ("ALLOW", "emergency")
        proc.send_signal(signal.SIGHUP)  # reloaded in a child process, the engine serving meanwhile
        await read_until(lambda: any(e.get("msg") == "tariffs reloaded" for e in logs), "on SIGHUP")
        again = await sim.place_call(Scenario("112", talk=1))
        assert (again.status, again.reason) == ("ALLOW", "emergency")
        # A process held still (as by a host's pause, or swapping) is a stalled event loop: the
        # engine says so, with how long, and goes on answering.
        held = len(logs)
        proc.send_signal(signal.SIGSTOP)
        await asyncio.sleep(0.4)
        proc.send_signal(signal.SIGCONT)

        def stalled(e: dict[str, object]) -> bool:  # a slow start may have had a short stall of its own
            seconds = e.get("seconds")
            return (
                str(e.get("msg", "")).startswith("event loop stalled") and isinstance(seconds, float) and seconds >= 0.3
            )

        await read_until(lambda: any(stalled(e) for e in logs[held:]), "after a stall")
        assert next(e for e in logs[held:] if stalled(e))["level"] == "warning"
        after = await sim.place_call(Scenario("112", talk=1))
        assert (after.status, after.reason) == ("ALLOW", "emergency")
        proc.send_signal(signal.SIGTERM)
        _, stderr_tail = await asyncio.wait_for(proc.communicate(), 20)
        tail = [json.loads(line) for line in stderr_tail.splitlines()]
        assert proc.returncode == 0
        everything = [*logs, *tail]
        assert any(e.get("msg") == "engine stopped" for e in everything)
        assert all(SECRET not in json.dumps(e) for e in everything)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await sim.close()
