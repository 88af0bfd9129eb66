"""Every ledger operation, written once as a generator that yields SQL and receives results.

A program never touches a connection: a driver runs it (sqlite3 inside aiosqlite's thread,
many programs per transaction; or asyncpg, one transaction each). A program refused after
it wrote gives back what it took itself, in SQL; a program that raises is undone by its
driver, and nothing else of it remains. Programs are deterministic: the same program on
the same database state yields the same statements, so a driver may run one again.
Locks are taken in one order everywhere — the extension row, then the account row — so
concurrent engines sharing PostgreSQL cannot deadlock each other.
SQL uses `?` placeholders and named columns only.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Literal, NamedTuple, TypeVar

from .models import (
    Account,
    AccountSettings,
    ActivityRow,
    CallDetails,
    CheckProblem,
    Extension,
    ExtensionSettings,
    LedgerError,
    OnLow,
    Refusal,
    Reservation,
    ReserveResult,
    SettleResult,
    Topup,
    TopupRequest,
    TopupStatus,
    periods,
)

T = TypeVar("T")
Row = dict[str, Any]


class Stmt(NamedTuple):
    """One statement and what the program wants back (a tuple: built twice per call, it must be cheap)."""

    sql: str
    params: tuple[Any, ...]
    want: Literal["one", "all", "count"]


Program = Generator[Stmt, Any, T]


def one(sql: str, *params: Any) -> Stmt:
    return Stmt(sql, params, "one")


def rows(sql: str, *params: Any) -> Stmt:
    return Stmt(sql, params, "all")


def count(sql: str, *params: Any) -> Stmt:
    return Stmt(sql, params, "count")


ACCOUNT_COLUMNS = (
    "id, plan, currency, balance, reserved, threshold, on_low, topup_amount, "
    "block_on_topup_failure, topup_failed, topup_pending, floor"
)
# The floor: the threshold in block mode, or in top-up mode after a failed top-up (if asked).
FLOOR_SQL = "CASE WHEN on_low = 'block' OR (topup_failed = 1 AND block_on_topup_failure = 1) THEN threshold ELSE 0 END"


def _account(r: Row) -> Account:
    settings = AccountSettings(
        plan=r["plan"],
        currency=r["currency"],
        threshold=r["threshold"],
        on_low=OnLow(r["on_low"]),
        topup_amount=r["topup_amount"],
        block_on_topup_failure=bool(r["block_on_topup_failure"]),
    )
    return Account(
        r["id"], settings, r["balance"], r["reserved"], r["floor"], bool(r["topup_failed"]), r["topup_pending"]
    )


def _extension(r: Row) -> Extension:
    classes = frozenset(c for c in r["classes"].split(",") if c) if r["classes"] is not None else None
    settings = ExtensionSettings(bool(r["chargeable"]), classes, r["daily_cap"], r["monthly_cap"])
    return Extension(
        r["account_id"], r["ext"], settings, r["reserved"], r["day"], r["day_spent"], r["month"], r["month_spent"]
    )


def _topup(r: Row) -> Topup:
    return Topup(
        r["reference"], r["account_id"], r["amount"], r["at"], r["source"], TopupStatus(r["status"]), r["detail"]
    )


# ---------------------------------------------------------------- accounts


def create_account(account_id: str, s: AccountSettings, now: int) -> Program[Account]:
    if (yield one("SELECT id FROM accounts WHERE id = ?", account_id)) is not None:
        raise LedgerError(f"account {account_id!r} already exists")
    yield count(
        "INSERT INTO accounts (id, plan, currency, threshold, on_low, topup_amount, block_on_topup_failure,"
        " floor, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        account_id,
        s.plan,
        s.currency,
        s.threshold,
        s.on_low.value,
        s.topup_amount,
        int(s.block_on_topup_failure),
        s.threshold if s.on_low is OnLow.BLOCK else 0,
        now,
    )
    return (yield from get_account(account_id))


def update_settings(account_id: str, s: AccountSettings) -> Program[Account]:
    yield from get_account(account_id)
    yield count(
        "UPDATE accounts SET plan = ?, threshold = ?, on_low = ?, topup_amount = ?, block_on_topup_failure = ?"
        " WHERE id = ?",
        s.plan,
        s.threshold,
        s.on_low.value,
        s.topup_amount,
        int(s.block_on_topup_failure),
        account_id,
    )
    yield count(f"UPDATE accounts SET floor = {FLOOR_SQL} WHERE id = ?", account_id)
    return (yield from get_account(account_id))


def find_account(account_id: str) -> Program[Account | None]:
    r = yield one(f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?", account_id)
    return None if r is None else _account(r)


def get_account(account_id: str) -> Program[Account]:
    acc = yield from find_account(account_id)
    if acc is None:
        raise LedgerError(f"unknown account {account_id!r}")
    return acc


def list_accounts() -> Program[list[Account]]:
    return [_account(r) for r in (yield rows(f"SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY id"))]


# ---------------------------------------------------------------- top-ups


def _credit(account_id: str, amount: int, reference: str, now: int) -> Program[int]:
    acc = yield one(
        "UPDATE accounts SET balance = balance + ?, topup_failed = 0,"
        " topup_pending = CASE WHEN topup_pending = ? THEN NULL ELSE topup_pending END"
        " WHERE id = ? RETURNING balance",
        amount,
        reference,
        account_id,
    )
    yield count(f"UPDATE accounts SET floor = {FLOOR_SQL} WHERE id = ?", account_id)
    yield count(
        "INSERT INTO journal (account_id, at, entry, amount, reference, balance_after) VALUES (?, ?, 'topup', ?, ?, ?)",
        account_id,
        now,
        amount,
        reference,
        acc["balance"],
    )
    return int(acc["balance"])


def topup(account_id: str, amount: int, reference: str, source: str, now: int) -> Program[tuple[Topup, bool]]:
    """Credit the account once per reference; a repeated reference changes nothing."""
    if amount <= 0:
        raise LedgerError("a top-up must be a positive amount")
    yield from get_account(account_id)
    prior = yield one("SELECT * FROM topups WHERE reference = ?", reference)
    if prior is not None:
        if prior["account_id"] != account_id or prior["amount"] != amount:
            raise LedgerError(f"top-up reference {reference!r} was already used for another top-up")
        return _topup(prior), False
    yield count(
        "INSERT INTO topups (reference, account_id, amount, at, source, status) VALUES (?, ?, ?, ?, ?, 'succeeded')",
        reference,
        account_id,
        amount,
        now,
        source,
    )
    yield from _credit(account_id, amount, reference, now)
    return Topup(reference, account_id, amount, now, source, TopupStatus.SUCCEEDED), True


def complete_topup(reference: str, ok: bool, detail: str, now: int) -> Program[Topup]:
    """Record a payment's outcome; idempotent once the top-up is no longer pending."""
    r = yield one("SELECT * FROM topups WHERE reference = ?", reference)
    if r is None:
        raise LedgerError(f"unknown top-up reference {reference!r}")
    if r["status"] != TopupStatus.PENDING.value:
        return _topup(r)
    status = TopupStatus.SUCCEEDED if ok else TopupStatus.FAILED
    yield count("UPDATE topups SET status = ?, detail = ? WHERE reference = ?", status.value, detail, reference)
    if ok:
        yield from _credit(r["account_id"], r["amount"], reference, now)
    else:
        yield count(
            "UPDATE accounts SET topup_failed = 1,"
            " topup_pending = CASE WHEN topup_pending = ? THEN NULL ELSE topup_pending END WHERE id = ?",
            reference,
            r["account_id"],
        )
        yield count(f"UPDATE accounts SET floor = {FLOOR_SQL} WHERE id = ?", r["account_id"])
    return Topup(reference, r["account_id"], r["amount"], r["at"], r["source"], status, detail)


def list_topups(account_id: str) -> Program[list[Topup]]:
    yield from get_account(account_id)
    return [
        _topup(r) for r in (yield rows("SELECT * FROM topups WHERE account_id = ? ORDER BY at, reference", account_id))
    ]


# ---------------------------------------------------------------- extensions

_EXT_DEFAULT = (  # an extension's row, with the default rules, if its account exists
    "INSERT INTO extensions (account_id, ext) SELECT ?, ? WHERE EXISTS (SELECT 1 FROM accounts WHERE id = ?)"
    " ON CONFLICT DO NOTHING"
)


def set_extension(account_id: str, ext: str, s: ExtensionSettings) -> Program[Extension]:
    yield from get_account(account_id)
    classes = None if s.classes is None else ",".join(sorted(s.classes))
    yield count(_EXT_DEFAULT, account_id, ext, account_id)
    yield count(
        "UPDATE extensions SET chargeable = ?, classes = ?, daily_cap = ?, monthly_cap = ?"
        " WHERE account_id = ? AND ext = ?",
        int(s.chargeable),
        classes,
        s.daily_cap,
        s.monthly_cap,
        account_id,
        ext,
    )
    return _extension((yield one("SELECT * FROM extensions WHERE account_id = ? AND ext = ?", account_id, ext)))


def find_extension(account_id: str, ext: str) -> Program[Extension | None]:
    r = yield one("SELECT * FROM extensions WHERE account_id = ? AND ext = ?", account_id, ext)
    return None if r is None else _extension(r)


def list_extensions(account_id: str) -> Program[list[Extension]]:
    return [
        _extension(r) for r in (yield rows("SELECT * FROM extensions WHERE account_id = ? ORDER BY ext", account_id))
    ]


# ---------------------------------------------------------------- reservations

_EXT_TAKE = (
    "UPDATE extensions SET reserved = reserved + ?,"
    " day_spent = CASE WHEN day = ? THEN day_spent ELSE 0 END, day = ?,"
    " month_spent = CASE WHEN month = ? THEN month_spent ELSE 0 END, month = ?"
    " WHERE account_id = ? AND ext = ? AND chargeable = 1"
    " AND (daily_cap IS NULL OR (CASE WHEN day = ? THEN day_spent ELSE 0 END) + reserved + ? <= daily_cap)"
    " AND (monthly_cap IS NULL OR (CASE WHEN month = ? THEN month_spent ELSE 0 END) + reserved + ? <= monthly_cap)"
)
_ACCOUNT_TAKE = "UPDATE accounts SET reserved = reserved + ? WHERE id = ? AND balance - reserved - floor >= ?"


def _take(account_id: str, ext: str, amount: int, now: int) -> Program[Refusal | None]:
    """Hold `amount` against both budgets, the extension's caps and the account, or refuse.

    A refusal leaves nothing held: what was taken is given back here, by the program itself,
    so a driver never has to roll one program back alone.
    """
    day, month = periods(now)
    args = (amount, day, day, month, month, account_id, ext, day, amount, month, amount)
    n = yield count(_EXT_TAKE, *args)
    created = False
    if n == 0:  # refused, or the first call of this extension: give it the default rules and take again
        created = bool((yield count(_EXT_DEFAULT, account_id, ext, account_id)))
        # Again even if not created here: another call may have created the row meanwhile.
        n = yield count(_EXT_TAKE, *args)
        if n == 0:
            e = yield one("SELECT chargeable FROM extensions WHERE account_id = ? AND ext = ?", account_id, ext)
            if e is None:
                return Refusal.UNKNOWN_ACCOUNT
            yield from _forget_extension(account_id, ext, created)
            return Refusal.CAP_REACHED if e["chargeable"] else Refusal.EXTENSION_NOT_ALLOWED
    if (yield count(_ACCOUNT_TAKE, amount, account_id, amount)) == 0:
        yield count(
            "UPDATE extensions SET reserved = reserved - ? WHERE account_id = ? AND ext = ?", amount, account_id, ext
        )
        yield from _forget_extension(account_id, ext, created)
        acc = yield from find_account(account_id)
        return Refusal.UNKNOWN_ACCOUNT if acc is None else acc.shortfall(amount)
    return None


def _forget_extension(account_id: str, ext: str, created: bool) -> Program[None]:
    """A refused first call leaves no trace of its extension either."""
    if created:
        yield count("DELETE FROM extensions WHERE account_id = ? AND ext = ?", account_id, ext)


def reserve(
    call_id: str, account_id: str, ext: str, amount: int, now: int, deadline: int = 0, details: str = ""
) -> Program[ReserveResult]:
    if amount <= 0:
        raise LedgerError("a reservation must be a positive amount")
    inserted = yield count(
        "INSERT INTO reservations (call_id, account_id, ext, amount, created_at, updated_at, deadline, details)"
        " SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM accounts WHERE id = ?)"
        " AND NOT EXISTS (SELECT 1 FROM activity WHERE call_id = ?) ON CONFLICT DO NOTHING",
        call_id,
        account_id,
        ext,
        amount,
        now,
        now,
        deadline,
        details,
        account_id,
        call_id,
    )
    if not inserted:
        if (yield one("SELECT id FROM accounts WHERE id = ?", account_id)) is None:
            return ReserveResult(False, Refusal.UNKNOWN_ACCOUNT)
        return ReserveResult(False, Refusal.DUPLICATE_CALL)
    refusal = yield from _take(account_id, ext, amount, now)
    if refusal is not None:
        yield count("DELETE FROM reservations WHERE call_id = ?", call_id)
        return ReserveResult(False, refusal)
    return ReserveResult(True, None, amount)


def extend(call_id: str, amount: int, now: int, deadline: int = 0) -> Program[ReserveResult]:
    """Add to a live reservation under the same rule as `reserve`."""
    if amount <= 0:
        raise LedgerError("an extension must be a positive amount")
    r = yield one("SELECT account_id, ext, amount FROM reservations WHERE call_id = ?", call_id)
    if r is None:
        return ReserveResult(False, Refusal.UNKNOWN_CALL)
    refusal = yield from _take(r["account_id"], r["ext"], amount, now)
    if refusal is not None:
        return ReserveResult(False, refusal)
    yield count(
        "UPDATE reservations SET amount = amount + ?, updated_at = ?,"
        " deadline = CASE WHEN ? > deadline THEN ? ELSE deadline END WHERE call_id = ?",
        amount,
        now,
        deadline,
        deadline,
        call_id,
    )
    return ReserveResult(True, None, r["amount"] + amount)


def _give_back(r: Row, spent: int, now: int) -> Program[None]:
    """Return a reservation to both budgets; `spent` counts against the extension's caps."""
    day, month = periods(now)
    yield count(
        "UPDATE extensions SET reserved = reserved - ?,"
        " day_spent = CASE WHEN day = ? THEN day_spent ELSE 0 END + ?, day = ?,"
        " month_spent = CASE WHEN month = ? THEN month_spent ELSE 0 END + ?, month = ?"
        " WHERE account_id = ? AND ext = ?",
        r["amount"],
        day,
        spent,
        day,
        month,
        spent,
        month,
        r["account_id"],
        r["ext"],
    )


def release(call_id: str, now: int) -> Program[bool]:
    """Give back the reservation of a call that never connected; False if there was none."""
    r = yield one("SELECT account_id, ext, amount FROM reservations WHERE call_id = ?", call_id)
    if r is None:
        return False
    yield from _give_back(r, 0, now)
    yield count("UPDATE accounts SET reserved = reserved - ? WHERE id = ?", r["amount"], r["account_id"])
    yield count("DELETE FROM reservations WHERE call_id = ?", call_id)
    return True


def settle(call_id: str, cost: int, d: CallDetails, now: int) -> Program[SettleResult]:
    """Debit the cost, release the rest, write the activity row; once per call."""
    if cost < 0:
        raise LedgerError("a cost cannot be negative")
    # Taking the reservation away is what makes a settle happen once: a second settle finds none.
    r = yield one("DELETE FROM reservations WHERE call_id = ? RETURNING account_id, ext, amount", call_id)
    if r is None:
        done = yield one("SELECT cost, balance_after FROM activity WHERE call_id = ?", call_id)
        if done is not None:
            return SettleResult(False, already=True, cost=done["cost"], balance_after=done["balance_after"])
        return SettleResult(False, unknown=True)
    account_id = r["account_id"]
    yield from _give_back(r, cost, now)
    acc = yield one(
        "UPDATE accounts SET balance = balance - ?, reserved = reserved - ? WHERE id = ?"
        " RETURNING balance, threshold, on_low, topup_pending, topup_amount",
        cost,
        r["amount"],
        account_id,
    )
    balance = int(acc["balance"])
    if cost > 0:
        yield count(
            "INSERT INTO journal (account_id, at, entry, amount, reference, balance_after)"
            " VALUES (?, ?, 'debit', ?, ?, ?)",
            account_id,
            now,
            -cost,
            call_id,
            balance,
        )
    yield count(
        "INSERT INTO activity (call_id, account_id, ext, started_at, ended_at, dialed, e164, destination, kind,"
        " billable_seconds, cost, reserved, balance_after, estimated, overdraft)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        call_id,
        account_id,
        r["ext"],
        d.started_at,
        d.ended_at or now,
        d.dialed,
        d.e164,
        d.destination,
        d.kind,
        d.billable_seconds,
        cost,
        r["amount"],
        balance,
        int(d.estimated),
        int(cost > r["amount"]),
    )
    request = None
    if acc["on_low"] == OnLow.TOPUP.value and balance < acc["threshold"] and acc["topup_pending"] is None:
        reference = f"auto:{account_id}:{call_id}"
        taken = yield count(
            "UPDATE accounts SET topup_pending = ? WHERE id = ? AND topup_pending IS NULL",
            reference,
            account_id,
        )
        if taken:
            yield count(
                "INSERT INTO topups (reference, account_id, amount, at, source, status)"
                " VALUES (?, ?, ?, ?, 'auto', 'pending')",
                reference,
                account_id,
                acc["topup_amount"],
                now,
            )
            request = TopupRequest(reference, account_id, int(acc["topup_amount"]))
    return SettleResult(
        True, cost=cost, reserved=r["amount"], overdraft=cost > r["amount"], balance_after=balance, topup=request
    )


def live_reservations(account_id: str | None = None) -> Program[list[Reservation]]:
    cols = "call_id, account_id, ext, amount, created_at, updated_at, deadline, details"
    if account_id is None:
        found = yield rows(f"SELECT {cols} FROM reservations ORDER BY created_at, call_id")
    else:
        found = yield rows(
            f"SELECT {cols} FROM reservations WHERE account_id = ? ORDER BY created_at, call_id", account_id
        )
    return [Reservation(**dict(r)) for r in found]


# ---------------------------------------------------------------- activity and proof


def activity(account_id: str, ext: str | None, since: int | None, until: int | None) -> Program[list[ActivityRow]]:
    yield from get_account(account_id)
    sql = (
        "SELECT call_id, account_id, ext, started_at, ended_at, dialed, e164, destination, kind, billable_seconds,"
        " cost, balance_after, estimated, overdraft FROM activity WHERE account_id = ?"
    )
    params: list[Any] = [account_id]
    for clause, value in (("ext = ?", ext), ("ended_at >= ?", since), ("ended_at < ?", until)):
        if value is not None:
            sql += f" AND {clause}"
            params.append(value)
    found = yield rows(sql + " ORDER BY ended_at, call_id", *params)
    return [
        ActivityRow(**{**dict(r), "estimated": bool(r["estimated"]), "overdraft": bool(r["overdraft"])}) for r in found
    ]


def check() -> Program[list[CheckProblem]]:
    """Prove every balance equals its journal and every hold equals its live reservations."""
    problems: list[CheckProblem] = []
    journal = {
        r["account_id"]: int(r["total"])
        for r in (yield rows("SELECT account_id, SUM(amount) AS total FROM journal GROUP BY account_id"))
    }
    held = {
        r["account_id"]: int(r["total"])
        for r in (yield rows("SELECT account_id, SUM(amount) AS total FROM reservations GROUP BY account_id"))
    }
    debits = {
        r["account_id"]: int(r["total"])
        for r in (yield rows("SELECT account_id, SUM(cost) AS total FROM activity GROUP BY account_id"))
    }
    journal_debits = {
        r["account_id"]: int(r["total"])
        for r in (
            yield rows(
                "SELECT account_id, -SUM(amount) AS total FROM journal WHERE entry = 'debit' GROUP BY account_id"
            )
        )
    }
    for a in (yield rows("SELECT id, balance, reserved FROM accounts ORDER BY id")):
        aid = a["id"]
        if a["balance"] != journal.get(aid, 0):
            problems.append(CheckProblem(aid, f"balance {a['balance']} != journal total {journal.get(aid, 0)}"))
        if a["reserved"] != held.get(aid, 0):
            problems.append(CheckProblem(aid, f"reserved {a['reserved']} != live reservations {held.get(aid, 0)}"))
        if debits.get(aid, 0) != journal_debits.get(aid, 0):
            problems.append(
                CheckProblem(aid, f"activity costs {debits.get(aid, 0)} != journal debits {journal_debits.get(aid, 0)}")
            )
    ext_held = yield rows(
        "SELECT e.account_id, e.ext, e.reserved, COALESCE(SUM(r.amount), 0) AS live FROM extensions e"
        " LEFT JOIN reservations r ON r.account_id = e.account_id AND r.ext = e.ext"
        " GROUP BY e.account_id, e.ext, e.reserved"
    )
    for e in ext_held:
        if e["reserved"] != e["live"]:
            problems.append(
                CheckProblem(
                    e["account_id"], f"extension {e['ext']} holds {e['reserved']} != live reservations {e['live']}"
                )
            )
    return problems


def annotate(call_id: str, deadline: int, details: str) -> Program[bool]:
    """Record a live call's deadline and details (answer time, price) for reconciliation."""
    n = yield count("UPDATE reservations SET deadline = ?, details = ? WHERE call_id = ?", deadline, details, call_id)
    return bool(n)


def caller(account_id: str, ext: str) -> Program[tuple[Account | None, Extension | None]]:
    """An account and one of its extensions, in one trip (the authorization's read)."""
    acc = yield from find_account(account_id)
    if acc is None:
        return None, None
    return acc, (yield from find_extension(account_id, ext))
