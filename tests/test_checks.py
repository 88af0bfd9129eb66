"""`rating-engine run --check` and `web --check`: what a restart would start with, read as the
command reads it, with nothing written: no ledger made, no schema brought up to date, no secret
printed."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from pathlib import Path

import asyncpg
import pytest

from rating_engine.cli import main
from rating_engine.ledger import AccountSettings
from rating_engine.ledger.schema import LATEST

from .conftest import OFFICE_FR
from .helpers import HEADER, office_plan_on
from .ledgers import opened


def _config(tmp_path: Path, url: str, extra: str = "") -> str:
    cfg = tmp_path / "engine.toml"
    cfg.write_text(f'[engine]\nnode = "pbx7"\n[ledger]\nurl = "{url}"\n[tariffs]\nplans = ["{OFFICE_FR}"]\n{extra}')
    return str(cfg)


async def _make(url: str) -> None:
    async with opened(url):
        pass


async def _tables(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"))
    finally:
        await conn.close()


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATING_ENGINE_AMI_SECRET", "s3cret-of-the-ami")


def test_a_check_says_what_would_run_and_makes_no_ledger(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, url)
    assert main(["run", "--config", cfg, "--check"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == f"config    {cfg}: node pbx7" and lines[-1] == "ok" and err == ""
    assert "fastagi   127.0.0.1:4573" in lines and "metrics   127.0.0.1:9573" in lines
    assert "ami       rating@127.0.0.1:5038, its secret from $RATING_ENGINE_AMI_SECRET" in lines
    assert any(line.startswith("plan      office-fr: deck ") and line.endswith(" rates)") for line in lines)
    assert lines[-2].endswith(": no ledger yet: made at the first start")
    assert "s3cret" not in out
    if url.startswith("sqlite"):
        assert list(tmp_path.iterdir()) == [tmp_path / "engine.toml"]  # no ledger, no spool, no lock
    else:
        assert asyncio.run(_tables(url)) == 0  # no schema made in the database
    asyncio.run(_make(url))
    assert main(["run", "--config", cfg, "--check"]) == 0
    assert f": schema version {LATEST} (current)" in capsys.readouterr().out


def test_a_check_hides_the_ledger_s_password_and_fails_in_one_line_where_it_is_unreachable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, "postgresql://engine:hunter2@127.0.0.1:1/rating")
    assert main(["run", "--config", cfg, "--check"]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("rating-engine: cannot reach the ledger: ") and err.count("\n") == 1
    assert "hunter2" not in out + err


def test_a_check_reads_the_schema_version_without_changing_the_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ledger.sqlite3"
    asyncio.run(_make(f"sqlite:///{path}"))
    cfg = _config(tmp_path, f"sqlite:///{path}")
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM schema_version WHERE version > 3")
    assert main(["run", "--config", cfg, "--check"]) == 0
    assert f": schema version 3: brought to {LATEST} at the next start" in capsys.readouterr().out
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO schema_version (version) VALUES (?)", (LATEST + 1,))
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    assert main(["run", "--config", cfg, "--check"]) == 1
    out, err = capsys.readouterr()
    assert f"schema version {LATEST + 1}, newer than this rating-engine ({LATEST}): it would refuse to start" in out
    assert err == "it would not start\n" and "ok" not in out.splitlines()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    (tmp_path / "other.sqlite3").write_text("not a database")
    assert main(["run", "--config", _config(tmp_path, f"sqlite:///{tmp_path / 'other.sqlite3'}"), "--check"]) == 2
    assert "file is not a database" in capsys.readouterr().err


def test_a_check_names_a_bad_tariff_s_place_and_warns_of_an_empty_deck(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deck = tmp_path / "deck.csv"
    plan = office_plan_on(deck)
    header = HEADER + "\n"
    deck.write_text(header + "33,France,x,0,60,60,,,\n")
    cfg = tmp_path / "engine.toml"
    cfg.write_text(f'[ledger]\nurl = "sqlite:///{tmp_path / "l.sqlite3"}"\n[tariffs]\nplans = ["{plan}"]\n')
    assert main(["run", "--config", str(cfg), "--check"]) == 2
    assert f"{deck}:{header.count(chr(10)) + 1}:3: rate_per_minute" in capsys.readouterr().err
    deck.write_text(header)
    assert main(["run", "--config", str(cfg), "--check"]) == 0
    out, err = capsys.readouterr()
    assert f"deck {deck} (0 rates)" in out and out.endswith("ok\n")
    assert err == f"warning: {deck}: no rates: plan 'office-fr' refuses every call it does not include (no_rate)\n"


def test_a_page_check_needs_a_ledger_and_warns_of_a_random_secret(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RATING_ENGINE_WEB_SECRET", raising=False)
    cfg = _config(tmp_path, url, '[web]\nbind = "127.0.0.1:8088"\n')
    assert main(["web", "--config", cfg, "--check"]) == 1  # the page makes no ledger
    out, err = capsys.readouterr()
    assert "page      127.0.0.1:8088, sessions signed with a secret from nowhere" in out
    assert out.splitlines()[-1].endswith(": no ledger yet: the page makes none (create an account first)")
    assert err.splitlines() == [
        "warning: no web secret: a random one is made at each start, which logs everybody out",
        "it would not start",
    ]
    asyncio.run(_make(url))
    monkeypatch.setenv("RATING_ENGINE_WEB_SECRET", "page-s3cret")
    assert main(["web", "--config", cfg, "--check"]) == 0
    out, err = capsys.readouterr()
    assert "a secret from $RATING_ENGINE_WEB_SECRET" in out and "payments  manual" in out and "mail      off" in out
    assert "plan      office-fr" in out and out.endswith("ok\n") and err == "" and "s3cret" not in out


def test_a_check_stops_at_a_missing_stripe_key_and_warns_of_what_would_half_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    asyncio.run(_make(url))
    for name in ("STRIPE_TEST_KEY", "STRIPE_TEST_HOOK", "SMTP_TEST_PASSWORD", "RATING_ENGINE_WEB_SECRET"):
        monkeypatch.delenv(name, raising=False)
    extra = (
        '[payments]\nprovider = "stripe"\nstripe_key_env = "STRIPE_TEST_KEY"\n'
        'stripe_webhook_secret_env = "STRIPE_TEST_HOOK"\n'
        '[mail]\nenabled = true\nhost = "smtp.example.net"\nusername = "billing"\n'
        'password_env = "SMTP_TEST_PASSWORD"\n'
    )
    cfg = _config(tmp_path, url, extra)
    for command in ("run", "web"):
        assert main([command, "--config", cfg, "--check"]) == 2
        err = capsys.readouterr().err
        assert err == "rating-engine: payments.provider = stripe needs its secret key in $STRIPE_TEST_KEY\n"
    monkeypatch.setenv("STRIPE_TEST_KEY", "sk_test_k3y")
    assert main(["run", "--config", cfg, "--check"]) == 0
    out, err = capsys.readouterr()
    assert "payments  stripe, its key from $STRIPE_TEST_KEY, its webhook secret from nowhere" in out
    assert err == "warning: no Stripe webhook secret in $STRIPE_TEST_HOOK: the page refuses Stripe's events\n"
    monkeypatch.setenv("STRIPE_TEST_HOOK", "whsec_h00k")
    assert main(["web", "--config", cfg, "--check"]) == 0
    out, err = capsys.readouterr()
    assert "mail      smtp.example.net:587 (starttls), as billing (password from $SMTP_TEST_PASSWORD)" in out
    assert "mail: no password for billing in $SMTP_TEST_PASSWORD: the server will refuse the login" in err
    assert not any(secret in out + err for secret in ("k3y", "h00k"))


def test_a_check_warns_of_accounts_on_a_plan_no_file_defines(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def accounts() -> None:
        async with opened(url) as ledger:
            await ledger.create_account("acme", AccountSettings("office-fr", "EUR"))
            for name in ("berlin-1", "berlin-2"):
                await ledger.create_account(name, AccountSettings("office-de", "EUR"))

    asyncio.run(accounts())
    assert main(["run", "--config", _config(tmp_path, url), "--check"]) == 0
    out, err = capsys.readouterr()
    assert out.endswith("ok\n") and err == (
        "warning: 2 account(s) on plan 'office-de', which no plan file here defines:"
        " every call of theirs but emergency calls would be refused (engine_error)\n"
    )
