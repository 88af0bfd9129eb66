import csv
import io
import json
from pathlib import Path

import pytest

from .conftest import OFFICE_FR
from .helpers import run


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.sqlite3'}"


def test_account_lifecycle_from_the_command_line(capsys, db: str) -> None:  # type: ignore[no-untyped-def]
    assert run(capsys, "account", "create", "acme", "--plan", str(OFFICE_FR), "--threshold", "1", "--db", db)[0] == 0
    code, out, _ = run(capsys, "account", "topup", "acme", "20", "--reference", "t1", "--db", db)
    assert code == 0 and "balance 20.00 EUR" in out
    code, out, _ = run(capsys, "account", "topup", "acme", "20", "--reference", "t1", "--db", db)
    assert code == 0 and "nothing added" in out
    assert (
        run(
            capsys, "extension", "set", "acme", "202", "--kinds", "national", "premium", "--daily-cap", "5", "--db", db
        )[0]
        == 0
    )
    assert run(capsys, "extension", "set", "acme", "202", "--monthly-cap", "50", "--db", db)[0] == 0
    code, out, _ = run(capsys, "account", "show", "acme", "--json", "--db", db)
    data = json.loads(out)
    assert (data["balance"], data["available"], data["floor"]) == ("20.00", "19.00", "1.00")
    [ext] = data["extensions"]
    assert (ext["kinds"], ext["daily_cap"], ext["monthly_cap"]) == (["national", "premium"], "5.00", "50.00")
    assert run(capsys, "account", "set", "acme", "--auto-topups-per-day", "3", "--db", db)[0] == 0
    code, out, _ = run(capsys, "ledger", "check", "--db", db)
    assert code == 0 and "ok: 1 account(s)" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["account", "topup", "nobody", "5"],
        ["account", "topup", "acme", "-5"],
        ["account", "topup", "acme", "1e3"],
        ["account", "topup", "acme", "0"],
        ["extension", "set", "acme", "201", "--kinds", "moon"],
        ["extension", "set", "acme", "201", "--daily-cap", "lots"],
        ["activity", "acme", "--since", "someday"],
        ["account", "create", "acme", "--plan", str(OFFICE_FR)],
        ["account", "set", "acme", "--auto-topups-per-day", "0"],
        ["account", "set", "acme", "--auto-topups-per-day", "25"],
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(capsys, db: str, argv: list[str]) -> None:  # type: ignore[no-untyped-def]
    run(capsys, "account", "create", "acme", "--plan", str(OFFICE_FR), "--db", db)
    run(capsys, "account", "topup", "acme", "10", "--reference", "seed", "--db", db)
    before = run(capsys, "account", "show", "acme", "--json", "--db", db)[1]
    code, out, err = run(capsys, *argv, "--db", db)
    assert code == 2 and out == ""
    assert err.startswith("rating-engine: ") and err.count("\n") == 1
    assert run(capsys, "account", "show", "acme", "--json", "--db", db)[1] == before


def test_activity_lists_calls_totals_and_exports_csv(capsys, db: str) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from rating_engine.ledger import CallDetails, make_ledger

    run(capsys, "account", "create", "acme", "--plan", str(OFFICE_FR), "--db", db)
    run(capsys, "account", "topup", "acme", "10", "--db", db)

    async def calls() -> None:
        ledger = make_ledger(db)
        await ledger.open()
        for i, ext in enumerate(["201", "202", "201"]):
            await ledger.reserve(f"c{i}", "acme", ext, 1_000_000, now=1_795_535_109)
            await ledger.settle(
                f"c{i}",
                250_000,
                CallDetails(
                    started_at=1_795_535_109,
                    ended_at=1_795_535_169,
                    dialed="0899123456",
                    destination="France premium 0899",
                    billable_seconds=60,
                ),
                now=1_795_535_169,
            )
        await ledger.close()

    asyncio.run(calls())
    code, out, _ = run(capsys, "activity", "acme", "--db", db)
    assert code == 0 and "France premium 0899" in out
    totals = out.split("totals per extension")[1]
    assert [line.split() for line in totals.splitlines()[3:5]] == [
        ["201", "2", "120", "0.50"],
        ["202", "1", "60", "0.25"],
    ]
    code, out, _ = run(capsys, "activity", "acme", "--extension", "202", "--csv", "--db", db)
    [row] = list(csv.DictReader(io.StringIO(out)))
    assert (row["call_id"], row["cost"], row["balance_after"]) == ("c1", "0.25", "9.50")
