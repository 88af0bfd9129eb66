"""`make demo`, the README's first command, as a real process: the call mix over real sockets,
the shared money run out mid-call without going below zero, every answered call settled once,
the page serving the demo's account with the login it prints, and a ledger that checks."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from rating_engine.demo import PEOPLE
from rating_engine.ledger import make_ledger
from rating_engine.money import format_amount, parse_amount

from .conftest import ROOT
from .helpers import csrf_token

OPENING = "4.00"
PAGE = re.compile(r"the Prepaid Account page: (http://127\.0\.0\.1:\d+/)\s+\(user (\S+), password (\S+)\)")


def _use_the_page(base: str, user: str, password: str) -> dict[str, Any]:
    """Log in as the demo says, with the CSRF token the form carries; the account's figures."""
    with httpx.Client(base_url=base, timeout=30) as c:
        token = csrf_token(c.get("/login").text)
        r = c.post("/login", data={"username": user, "password": password, "csrftoken": token})
        assert r.status_code == 303, r.text
        assert c.get("/accounts/acme-office/activity").status_code == 200
        figures = c.get("/accounts/acme-office/balance.json")
        assert figures.status_code == 200
        return dict(figures.json())


async def _what_the_ledger_holds(path: Path) -> tuple[Any, list[Any], list[Any]]:
    ledger = make_ledger(f"sqlite:///{path}")
    await ledger.open()
    try:
        return await ledger.account("acme-office"), await ledger.activity("acme-office"), await ledger.check()
    finally:
        await ledger.close()


def test_the_demo_runs_its_calls_serves_the_page_and_leaves_a_ledger_that_checks(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rating_engine.cli", "demo", "--speed", "20", "--balance", OPENING,
         "--dir", str(tmp_path), "--web"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        lines: list[str] = []
        while not (page := PAGE.search(lines[-1] if lines else "")):
            line = proc.stdout.readline()
            assert line, f"the demo ended before it served the page: {lines}"
            lines.append(line)
        seen_on_page = _use_the_page(*page.groups())  # while the calls run
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    text = "".join(lines) + out
    assert text.rstrip().endswith("ledger check: ok, every balance equals its journal"), text
    assert "€" in seen_on_page["balance"] and isinstance(seen_on_page["live_calls"], int), seen_on_page

    assert re.search(r"\s112\s+ALLOW emergency", text)  # Dave's, who may make no chargeable call
    assert re.search(r"\+447911123456\s+DENY extension_not_allowed", text)  # Eve: no mobiles abroad
    assert re.search(r"\+212612345678\s+DENY extension_not_allowed", text)  # Dave
    assert "not answered: reservation released, nothing charged" in text  # the busy one
    assert text.count("(cut at its paid deadline)") >= 3, "the shared money did not run out mid-call"

    account, rows, problems = asyncio.run(_what_the_ledger_holds(tmp_path / "ledger.sqlite3"))
    assert problems == []
    assert account.reserved == 0, "a reservation was left behind"
    assert account.balance >= 0 and all(r.balance_after >= 0 for r in rows)
    assert sum(r.cost for r in rows) == parse_amount(OPENING) - account.balance  # every micro-unit
    assert len(rows) == text.count("answered; deadline set in Asterisk"), "an answered call not settled once"
    settled = re.findall(r"ended after (\d+) s: ([\d.]+) EUR debited from (\d+)", text)
    assert sorted((int(s), parse_amount(c), e) for s, c, e in settled) == sorted(
        (r.billable_seconds, r.cost, r.ext) for r in rows
    ), "what the demo said it debited is not what the ledger holds"
    assert {r.ext for r in rows} <= set(PEOPLE) - {"204"}  # Dave's chargeable call never went through
    assert f"balance {format_amount(account.balance, 'EUR')} EUR" in text  # the summary is the ledger's
