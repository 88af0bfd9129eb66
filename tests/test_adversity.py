"""The adversity suite: what a skeptical operator (or an attacker) throws at the engine.

Each test here failed on an earlier version. Extend it: a new way to break the engine gets a
test here first. Commands are driven in-process (`main(argv)`: exit 0/1/2, one line on stderr,
never a traceback); network ports over real sockets on 127.0.0.1.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rating_engine.cli import main
from rating_engine.errors import InvalidAmount
from rating_engine.ledger import AccountSettings, ExtensionSettings, LedgerError
from rating_engine.ledger.programs import MAX_BALANCE
from rating_engine.money import MAX_AMOUNT, parse_amount

from .conftest import OFFICE_FR
from .ledgers import BACKENDS, database_url, opened

EUR = 1_000_000


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    assert run(capsys, "account", "create", "acme", "--plan", str(OFFICE_FR), "--db", url)[0] == 0
    assert run(capsys, "account", "topup", "acme", "10", "--reference", "opening", "--db", url)[0] == 0
    return url


def _state(url: str) -> tuple[object, ...]:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        return (
            conn.execute("SELECT balance, typeof(balance) FROM accounts").fetchall(),
            conn.execute("SELECT COUNT(*) FROM journal").fetchone(),
            conn.execute("SELECT COUNT(*) FROM topups").fetchone(),
        )


# ---------------------------------------------------------------- money: bounded, integer, ASCII


@pytest.mark.parametrize(
    "amount",
    [
        "9223372036854",
        "99999999999999999999999",
        "1000000000.000001",
        "１２",
        "١٢",
        "1e3",
        "²",
        "inf",
        "NaN",
        "-5",
        "0",
    ],
)
def test_a_bad_top_up_exits_2_with_one_line_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], db: str, amount: str
) -> None:
    before = _state(db)
    code, out, err = run(capsys, "account", "topup", "acme", amount, "--db", db)
    assert (code, out) == (2, "") and err.count("\n") == 1 and "Traceback" not in err
    assert _state(db) == before


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from database_url(request.param, tmp_path)


async def test_no_balance_can_be_pushed_past_its_bound(url: str) -> None:
    async with opened(url) as ledger:
        await ledger.create_account("acme", AccountSettings("office-fr", "EUR"))
        for i in range(MAX_BALANCE // MAX_AMOUNT):
            await ledger.topup("acme", MAX_AMOUNT, f"t{i}")
        with pytest.raises(LedgerError, match="would exceed"):
            await ledger.topup("acme", 1, "one-too-many")
        acc = await ledger.account("acme")
        assert acc.balance == MAX_BALANCE and await ledger.check() == []
        assert "one-too-many" not in [t.reference for t in await ledger.topups("acme")]


def test_the_sqlite_ledger_refuses_a_non_integer_balance(db: str) -> None:
    path = db.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn, pytest.raises(sqlite3.IntegrityError, match="must be integers"):
        conn.execute("UPDATE accounts SET balance = balance + 9223372036854775000")
    with sqlite3.connect(path) as conn, pytest.raises(sqlite3.IntegrityError, match="must be integers"):
        conn.execute("INSERT INTO journal (account_id, at, entry, amount, reference, balance_after)"
                     " VALUES ('acme', 0, 'topup', 1.5, 'x', 1)")  # fmt: skip


@given(st.text(max_size=30))
def test_parse_amount_gives_a_bounded_integer_or_a_clear_refusal(text: str) -> None:
    try:
        value = parse_amount(text)
    except InvalidAmount:
        return
    assert type(value) is int and 0 <= value <= MAX_AMOUNT
    assert text.strip().replace(".", "", 1).lstrip("+").isascii()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    argv=st.lists(
        st.one_of(
            st.sampled_from(["--threshold", "--velocity", "--max-calls", "--timezone", "--office-hours", "none"]),
            st.text(max_size=12),
        ),
        max_size=4,
    )
)
def test_account_set_never_tracebacks(capsys: pytest.CaptureFixture[str], db: str, argv: list[str]) -> None:
    try:
        code = main(["account", "set", "acme", *argv, "--db", db])
    except SystemExit as exc:  # argparse: usage error, exit 2
        code = int(exc.code or 0)
    _, err = capsys.readouterr()
    assert code in (0, 2) and "Traceback" not in err


# ---------------------------------------------------------------- names and references


@pytest.mark.parametrize("name", ["", " ", "a\nb", "\x1b[31mred", "x" * 100_000, "acme;drop", "_acme", "é"])
def test_account_names_have_a_grammar(capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str) -> None:
    url = f"sqlite:///{tmp_path / 'l.sqlite3'}"
    code, _, err = run(capsys, "account", "create", name, "--plan", str(OFFICE_FR), "--db", url)
    assert code == 2 and "account name" in err and len(err) < 400


@pytest.mark.parametrize("ext", ["", "2 01", "201\n", "\x00", "9" * 40])
async def test_extension_names_have_a_grammar(tmp_path: Path, ext: str) -> None:
    async with opened(f"sqlite:///{tmp_path / 'l.sqlite3'}") as ledger:
        await ledger.create_account("acme", AccountSettings("office-fr", "EUR"))
        with pytest.raises(LedgerError, match="extension"):
            await ledger.set_extension("acme", ext, ExtensionSettings())


def test_an_empty_reference_is_refused_so_a_repeat_cannot_credit_twice(
    capsys: pytest.CaptureFixture[str], db: str
) -> None:
    before = _state(db)
    for ref in ("", "   "):
        code, _, err = run(capsys, "account", "topup", "acme", "5", "--reference", ref, "--db", db)
        assert code == 2 and "--reference" in err
    assert _state(db) == before
