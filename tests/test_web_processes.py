"""The page and the engine as two processes writing one SQLite file: `rating-engine run` rates and
settles calls from a simulated Asterisk while `rating-engine web` takes settings, extensions,
purchases and hand top-ups from several browsers at once. Neither ever fails with "database is
locked", every call is settled once, every top-up credited once, and the ledger's check passes."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import socket
import sys
from collections import Counter
from pathlib import Path

import httpx

from rating_engine.accounts import Accounts
from rating_engine.asterisk.simulator import AsteriskSimulator, Scenario
from rating_engine.clock import Clock
from rating_engine.ledger import make_ledger
from rating_engine.rating.catalog import load_tariffs
from rating_engine.users import Users

from .conftest import OFFICE_FR, ROOT
from .helpers import EUR, csrf_token

PASSWORD = "correct horse battery"
CALLS, AT_ONCE, BROWSERS = 60, 12, 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _seed(url: str) -> None:
    plan = next(iter(load_tariffs([OFFICE_FR]).plans.values()))
    ledger = make_ledger(url)
    await ledger.open()
    try:
        accounts, users = Accounts(ledger), Users(ledger)
        await accounts.create("acme", Accounts.new_settings(plan, threshold=EUR))
        await accounts.top_up("acme", 1_000 * EUR, "opening", source="test")
        await users.add("admin@acme", PASSWORD, "acme")
        await users.add("operator", PASSWORD, None)
    finally:
        await ledger.close()


async def _start(
    args: list[str], env: dict[str, str], ready: set[str], logs: list[dict[str, object]]
) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rating_engine.cli", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    while not ready <= {e.get("msg") for e in logs}:
        line = await asyncio.wait_for(proc.stderr.readline(), 30)
        assert line, f"{args[0]} exited early: {logs}"
        logs.append(json.loads(line))
    return proc


async def _stop(proc: asyncio.subprocess.Process, logs: list[dict[str, object]]) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    _, tail = await asyncio.wait_for(proc.communicate(), 30)
    for line in tail.splitlines():
        try:
            logs.append(json.loads(line))
        except ValueError:
            logs.append({"msg": line.decode(errors="replace")})


async def _browser(base: str, username: str, n: int, done: asyncio.Event, statuses: Counter[int]) -> list[str]:
    """One person using the page as fast as it answers until the calls are over; the references of
    the funds it added by hand."""
    added: list[str] = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:

        async def token(path: str) -> str:
            return csrf_token((await c.get(path)).text)

        r = await c.post(
            "/login", data={"username": username, "password": PASSWORD, "csrftoken": await token("/login")}
        )
        assert r.status_code == 303, r.text
        for i in itertools.count():
            if done.is_set():
                return added
            t = await token("/accounts/acme/balance")
            if username == "operator":
                ref = f"transfer-{n}-{i}"
                posts = [
                    ("/accounts/acme/operator/funds", {"amount": "1.25", "reference": ref}),
                    ("/accounts/acme/operator/funds", {"amount": "1.25", "reference": ref}),  # twice: once
                ]
                added.append(ref)
                for p in (await _pending(c))[:2]:
                    posts.append(("/accounts/acme/operator/topups", {"reference": p, "decision": "confirm"}))
            else:
                posts = [
                    ("/accounts/acme/settings", {"on_low": "block", "threshold": f"{1 + i % 3}", "topup_amount": "0"}),
                    ("/accounts/acme/extensions", {"ext": f"2{n}{i % 5}", "name": f"desk {i}", "chargeable": "yes"}),
                    ("/accounts/acme/funds", {"amount": str(10 * EUR), "purchase": f"b{n}x{i}"}),
                ]
            for path, form in posts:
                statuses[(await c.post(path, data={**form, "csrftoken": t})).status_code] += 1
            for path in ("/accounts/acme/balance.json", "/accounts/acme/activity", "/accounts/acme/activity.csv"):
                statuses[(await c.get(path)).status_code] += 1
    return added


async def _pending(c: httpx.AsyncClient) -> list[str]:
    body = (await c.get("/accounts/acme/operator")).text
    return re.findall(r'name="reference" value="([^"]+)"', body)


async def test_the_page_and_the_engine_share_one_sqlite_file_without_ever_locking(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.sqlite3"
    await _seed(url)
    sim = AsteriskSimulator(Clock(), agi_port=0, secret="sim-secret")
    ami_port = await sim.start()
    agi_port, web_port = _free_port(), _free_port()
    config = tmp_path / "engine.toml"
    config.write_text(
        f'[agi]\naccount = "fixed:acme"\nbind = "127.0.0.1:{agi_port}"\n[ami]\nport = {ami_port}\n'
        f'[ledger]\nurl = "{url}"\n[tariffs]\nplans = ["{OFFICE_FR}"]\n[metrics]\nbind = ""\n'
        f'[web]\nbind = "127.0.0.1:{web_port}"\n'
    )
    env = {**os.environ, "RATING_ENGINE_AMI_SECRET": "sim-secret", "RATING_ENGINE_WEB_SECRET": "k" * 40}
    engine_logs: list[dict[str, object]] = []
    web_logs: list[dict[str, object]] = []
    engine = await _start(
        ["run", "--config", str(config)], env, {"engine started", "reconciled with Asterisk"}, engine_logs
    )
    web = await _start(["web", "--config", str(config)], env, {"page served"}, web_logs)
    try:
        sim.agi_port = agi_port
        base = f"http://127.0.0.1:{web_port}"
        for _ in range(100):  # uvicorn logs before it listens
            try:
                async with httpx.AsyncClient() as probe:
                    await probe.get(f"{base}/login")
                break
            except httpx.ConnectError:
                await asyncio.sleep(0.05)
        done, statuses = asyncio.Event(), Counter[int]()
        people = [
            asyncio.create_task(_browser(base, "operator" if n == 0 else "admin@acme", n, done, statuses))
            for n in range(BROWSERS)
        ]
        gate = asyncio.Semaphore(AT_ONCE)

        async def one(i: int) -> str:
            async with gate:
                call = await sim.place_call(Scenario("+1 212 555 0100", f"20{i % 10}", ring=0.1, talk=1 + i % 3))
                return call.variables.get("RATING_STATUS", "")

        answers = await asyncio.gather(*(one(i) for i in range(CALLS)))
        await asyncio.sleep(0.5)  # the last hangups' settles
        done.set()
        added = [ref for refs in await asyncio.gather(*people) for ref in refs]
    finally:
        await _stop(web, web_logs)
        await _stop(engine, engine_logs)
        await sim.close()
    assert answers == ["ALLOW"] * CALLS
    assert set(statuses) <= {200, 303} and sum(statuses.values()) > 100, statuses
    for logs in (engine_logs, web_logs):
        text = json.dumps(logs)
        assert "locked" not in text and "Traceback" not in text and '"level": "error"' not in text
    ledger = make_ledger(url)
    await ledger.open()
    try:
        assert await ledger.check() == []
        acc = await ledger.account("acme")
        assert acc.live_calls == 0 and acc.reserved == 0
        calls = await ledger.activity("acme")
        assert len(calls) == CALLS and len({c.call_id for c in calls}) == CALLS  # each settled once
        topups = {t.reference: t for t in await ledger.topups("acme")}
        assert all(topups[ref].status.value == "succeeded" for ref in added)  # once each, twice posted
        confirmed = [t for t in topups.values() if t.source == "web" and t.status.value == "succeeded"]
        credited = sum(t.amount for t in topups.values() if t.status.value == "succeeded")
        assert acc.balance == credited - sum(c.cost for c in calls)
        assert added and confirmed  # both kinds of top-up happened during the calls
    finally:
        await ledger.close()
