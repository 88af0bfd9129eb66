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

from collections.abc import Callable, Generator
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple, TypeVar

from ..contract import DestinationClass, Refusal
from ..money import MAX_AMOUNT, MICRO, format_amount, minor_units
from .models import (
    Account,
    AccountSettings,
    ActivityRow,
    AuditEntry,
    CallDetails,
    Card,
    CheckProblem,
    DaySpending,
    Extension,
    ExtensionSettings,
    ExtensionTotals,
    LedgerError,
    Notice,
    OnLow,
    Reservation,
    ReserveResult,
    SettleResult,
    Topup,
    TopupRequest,
    TopupStatus,
    User,
    check_account_id,
    check_extension,
    check_username,
    day_started,
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
    "block_on_topup_failure, topup_failed, topup_pending, floor, timezone, max_calls, max_attempts, "
    "velocity_limit, blocked_prefixes, office_hours, live_calls, auto_topups_per_day, topup_failures, topup_paused, "
    "settings_rev"
)
TZ = "(SELECT timezone FROM accounts a WHERE a.id = reservations.account_id) AS timezone"
"""The account's time zone, read with a reservation row (its caps' periods follow it)."""
HOUR = 3600
PAUSE_AFTER = 3
"""Automatic top-ups that fail in a row before it pauses until the administrator acts."""
MAX_BALANCE = 100 * MAX_AMOUNT
"""No balance grows beyond this (10^17 micro-units): sums of balances stay inside a BIGINT."""
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
        timezone=r["timezone"],
        max_calls=r["max_calls"],
        max_attempts=r["max_attempts"],
        velocity_limit=r["velocity_limit"],
        blocked_prefixes=tuple(p for p in r["blocked_prefixes"].split(",") if p),
        office_hours=r["office_hours"],
        auto_topups_per_day=r["auto_topups_per_day"],
    )
    return Account(
        r["id"],
        settings,
        r["balance"],
        r["reserved"],
        r["floor"],
        bool(r["topup_failed"]),
        r["topup_pending"],
        r["live_calls"],
        r["topup_failures"],
        bool(r["topup_paused"]),
        r["settings_rev"],
    )


def _extension(r: Row) -> Extension:
    stored = r["classes"]
    classes = None if stored is None else frozenset(DestinationClass(c) for c in stored.split(",") if c)
    settings = ExtensionSettings(
        bool(r["chargeable"]), classes, r["daily_cap"], r["monthly_cap"], r["max_calls"], r["max_attempts"], r["name"]
    )
    return Extension(
        r["account_id"],
        r["ext"],
        settings,
        r["reserved"],
        r["day"],
        r["day_spent"],
        r["month"],
        r["month_spent"],
        r["live_calls"],
        r["settings_rev"],
    )


def _topup(r: Row) -> Topup:
    return Topup(
        r["reference"],
        r["account_id"],
        r["amount"],
        r["at"],
        r["source"],
        TopupStatus(r["status"]),
        r["detail"],
        r["action_url"],
    )


# ---------------------------------------------------------------- accounts


def create_account(account_id: str, s: AccountSettings, now: int) -> Program[Account]:
    check_account_id(account_id)
    if (yield one("SELECT id FROM accounts WHERE id = ?", account_id)) is not None:
        raise LedgerError(f"account {account_id!r} already exists")
    yield count(
        "INSERT INTO accounts (id, plan, currency, threshold, on_low, topup_amount, block_on_topup_failure,"
        " floor, created_at, timezone, max_calls, max_attempts, velocity_limit, blocked_prefixes, office_hours,"
        " auto_topups_per_day) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        account_id,
        s.plan,
        s.currency,
        s.threshold,
        s.on_low.value,
        s.topup_amount,
        int(s.block_on_topup_failure),
        s.threshold if s.on_low is OnLow.BLOCK else 0,
        now,
        *_limit_columns(s),
    )
    return (yield from get_account(account_id))


def _limit_columns(s: AccountSettings) -> tuple[Any, ...]:
    return (
        s.timezone,
        s.max_calls,
        s.max_attempts,
        s.velocity_limit,
        ",".join(s.blocked_prefixes),
        s.office_hours,
        s.auto_topups_per_day,
    )


AUDITED = (
    "plan",
    "threshold",
    "on_low",
    "topup_amount",
    "block_on_topup_failure",
    "timezone",
    "max_calls",
    "max_attempts",
    "velocity_limit",
    "blocked_prefixes",
    "office_hours",
    "auto_topups_per_day",
)


def update_settings(account_id: str, s: AccountSettings, actor: str = "", now: int = 0) -> Program[Account]:
    """Change an account's settings; every field that changes is one audit line (old → new)."""
    old = (yield from get_account(account_id)).settings
    if s.currency != old.currency:
        raise LedgerError(f"an account's currency cannot change ({old.currency} → {s.currency})")
    yield count(
        "UPDATE accounts SET plan = ?, threshold = ?, on_low = ?, topup_amount = ?, block_on_topup_failure = ?,"
        " timezone = ?, max_calls = ?, max_attempts = ?, velocity_limit = ?, blocked_prefixes = ?, office_hours = ?,"
        " auto_topups_per_day = ?, settings_rev = settings_rev + 1 WHERE id = ?",
        s.plan,
        s.threshold,
        s.on_low.value,
        s.topup_amount,
        int(s.block_on_topup_failure),
        *_limit_columns(s),
        account_id,
    )
    yield count(f"UPDATE accounts SET floor = {FLOOR_SQL} WHERE id = ?", account_id)
    for name, detail in settings_changes(old, s):
        yield from _audit(account_id, now, actor, f"set {name}", detail)
    yield from _resume_auto_topup(account_id, now, actor)
    return (yield from get_account(account_id))


def _resume_auto_topup(account_id: str, now: int, actor: str) -> Program[None]:
    """The administrator acted (settings saved, a card saved): automatic top-up paused after
    failures tries again."""
    resumed = yield count(
        "UPDATE accounts SET topup_paused = 0, topup_failures = 0 WHERE id = ? AND topup_paused = 1", account_id
    )
    if resumed:
        yield from _audit(account_id, now, actor or "engine", "automatic top-up resumed", "")


def settings_changes(old: AccountSettings, new: AccountSettings) -> list[tuple[str, str]]:
    """(field, "old → new") for every audited setting that differs."""
    return [
        (name, f"{_shown(getattr(old, name), name, old.currency)} → {_shown(getattr(new, name), name, new.currency)}")
        for name in AUDITED
        if getattr(old, name) != getattr(new, name)
    ]


MONEY_SETTINGS = frozenset({"threshold", "topup_amount", "velocity_limit"})


def _shown(value: Any, name: str, currency: str) -> str:
    if value is None:
        return "none"
    if name in MONEY_SETTINGS:
        return f"{format_amount(value, currency)} {currency}"
    if isinstance(value, tuple):
        return ",".join(value) or "none"
    return str(value.value if hasattr(value, "value") else value)


def _audit(account_id: str, now: int, actor: str, action: str, detail: str) -> Program[None]:
    yield count(
        "INSERT INTO audit (account_id, at, actor, action, detail) VALUES (?, ?, ?, ?, ?)",
        account_id,
        now,
        actor,
        action,
        detail,
    )


def audit_list(account_id: str, limit: int) -> Program[list[AuditEntry]]:
    yield from get_account(account_id)
    found = yield rows(
        "SELECT account_id, at, actor, action, detail FROM audit WHERE account_id = ? ORDER BY at DESC, id DESC"
        " LIMIT ?",
        account_id,
        limit,
    )
    return [AuditEntry(**dict(r)) for r in found]


def add_user(user: User) -> Program[User]:
    check_username(user.username)
    if user.account_id is not None:
        yield from get_account(user.account_id)
    if (yield one("SELECT username FROM users WHERE username = ?", user.username)) is not None:
        raise LedgerError(f"user {user.username!r} already exists")
    yield count(
        "INSERT INTO users (username, password_hash, account_id, language, created_at, email)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        user.username,
        user.password_hash,
        user.account_id,
        user.language,
        user.created_at,
        user.email,
    )
    return user


def find_user(username: str) -> Program[User | None]:
    r = yield one(
        "SELECT username, password_hash, account_id, language, created_at, email FROM users WHERE username = ?",
        username,
    )
    return None if r is None else User(**dict(r))


def account_users(account_id: str) -> Program[list[User]]:
    """The administrators of one account, by name."""
    yield from get_account(account_id)
    found = yield rows(
        "SELECT username, password_hash, account_id, language, created_at, email FROM users WHERE account_id = ?"
        " ORDER BY username",
        account_id,
    )
    return [User(**dict(r)) for r in found]


def set_user_language(username: str, language: str) -> Program[bool]:
    return bool((yield count("UPDATE users SET language = ? WHERE username = ?", language, username)))


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


def check_amount(amount: int, what: str, *, zero: bool = False) -> None:
    """Every amount a program writes is a bounded integer: nothing overflows a BIGINT, or turns
    SQLite's integer arithmetic into REAL, however it is added up."""
    if type(amount) is not int or amount < (0 if zero else 1) or amount > MAX_AMOUNT:
        sign = "non-negative" if zero else "positive"
        raise LedgerError(f"{what} must be a {sign} whole number of micro-units, at most {MAX_AMOUNT}: {amount!r}")


def _credit(account_id: str, amount: int, reference: str, now: int) -> Program[int]:
    acc = yield one(
        "UPDATE accounts SET balance = balance + ?, topup_failed = 0, topup_failures = 0,"
        " topup_pending = CASE WHEN topup_pending = ? THEN NULL ELSE topup_pending END"
        " WHERE id = ? AND balance <= ? RETURNING balance",
        amount,
        reference,
        account_id,
        MAX_BALANCE - amount,
    )
    if acc is None:
        raise LedgerError(f"the balance of {account_id!r} would exceed {MAX_BALANCE // MICRO:,} units; nothing added")
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


def _check_topup(amount: int, reference: str) -> None:
    check_amount(amount, "a top-up")
    if not reference or len(reference) > 200 or not reference.isprintable():
        raise LedgerError("a top-up reference must be 1 to 200 printable characters")


def _record_topup(
    account_id: str, amount: int, reference: str, source: str, now: int, status: TopupStatus
) -> Program[tuple[Topup, bool]]:
    """The top-up of this reference: the one recorded before (the same account and amount), or a new
    row with `status`. (Topup, created)."""
    prior = yield one("SELECT * FROM topups WHERE reference = ?", reference)
    if prior is not None:
        if prior["account_id"] != account_id or prior["amount"] != amount:
            raise LedgerError(f"top-up reference {reference!r} was already used for another top-up")
        return _topup(prior), False
    yield count(
        "INSERT INTO topups (reference, account_id, amount, at, source, status) VALUES (?, ?, ?, ?, ?, ?)",
        reference,
        account_id,
        amount,
        now,
        source,
        status.value,
    )
    return Topup(reference, account_id, amount, now, source, status), True


def topup(
    account_id: str, amount: int, reference: str, source: str, now: int, actor: str = ""
) -> Program[tuple[Topup, bool]]:
    """Credit the account once per reference; a repeated reference changes nothing. Funds added by
    someone (`actor`) are also an audit line."""
    _check_topup(amount, reference)
    acc = yield from get_account(account_id)
    if acc.balance > MAX_BALANCE - amount:
        raise LedgerError(f"the balance of {account_id!r} would exceed {MAX_BALANCE // MICRO:,} units; nothing added")
    done, created = yield from _record_topup(account_id, amount, reference, source, now, TopupStatus.SUCCEEDED)
    if created:
        yield from _credit(account_id, amount, reference, now)
        if actor:
            shown = f"{format_amount(amount, acc.settings.currency)} {acc.settings.currency}"
            yield from _audit(account_id, now, actor, "funds added", f"{shown}, reference {reference}")
    return done, created


def request_topup(account_id: str, amount: int, reference: str, source: str, now: int) -> Program[tuple[Topup, bool]]:
    """A top-up to be paid (Add Funds): pending until the payment's outcome; the same reference
    again is the same top-up (a second press of "Buy" charges nothing)."""
    _check_topup(amount, reference)
    yield from get_account(account_id)
    return (yield from _record_topup(account_id, amount, reference, source, now, TopupStatus.PENDING))


def complete_topup(reference: str, ok: bool, detail: str, now: int, actor: str = "") -> Program[Topup]:
    """Record a payment's outcome; idempotent once the top-up is no longer pending. An outcome
    someone decided (`actor`: an operator confirming a transfer) is also an audit line."""
    r = yield one("SELECT * FROM topups WHERE reference = ?", reference)
    if r is None:
        raise LedgerError(f"unknown top-up reference {reference!r}")
    if r["status"] != TopupStatus.PENDING.value:
        return _topup(r)
    status = TopupStatus.SUCCEEDED if ok else TopupStatus.FAILED
    yield count("UPDATE topups SET status = ?, detail = ? WHERE reference = ?", status.value, detail, reference)
    if actor:
        action = "top-up confirmed" if ok else "top-up refused"
        yield from _audit(
            r["account_id"], now, actor, action, f"reference {reference}" + (f": {detail}" if detail else "")
        )
    if ok:
        yield from _credit(r["account_id"], r["amount"], reference, now)
        if r["source"] == "auto":
            yield from _notice(r["account_id"], "topup_done", f"done:{reference}", now, amount=r["amount"])
    elif r["source"] == "auto":  # a failed automatic top-up stops chargeable calls; a declined purchase does not
        failed = yield one(
            "UPDATE accounts SET topup_failed = 1, topup_failures = topup_failures + 1,"
            " topup_pending = CASE WHEN topup_pending = ? THEN NULL ELSE topup_pending END WHERE id = ?"
            " RETURNING topup_failures",
            reference,
            r["account_id"],
        )
        yield count(f"UPDATE accounts SET floor = {FLOOR_SQL} WHERE id = ?", r["account_id"])
        why = f"{reference}: {detail}"
        yield from _audit(r["account_id"], now, actor or "payments", "automatic top-up failed", why)
        yield from _notice(r["account_id"], "topup_failed", f"failed:{reference}", now, detail, amount=r["amount"])
        if int(failed["topup_failures"]) >= PAUSE_AFTER:
            yield count("UPDATE accounts SET topup_paused = 1 WHERE id = ?", r["account_id"])
            yield from _audit(r["account_id"], now, actor or "payments", "automatic top-up paused", "")
            yield from _notice(r["account_id"], "topup_paused", f"paused:{reference}", now)
    return Topup(reference, r["account_id"], r["amount"], r["at"], r["source"], status, detail)


def find_topup(reference: str) -> Program[Topup | None]:
    r = yield one("SELECT * FROM topups WHERE reference = ?", reference)
    return None if r is None else _topup(r)


def set_topup_action(reference: str, url: str, now: int) -> Program[bool]:
    """A pending top-up that waits on the customer (3-D Secure): where they confirm it (told by email)."""
    t = yield from find_topup(reference)
    if t is None or t.status is not TopupStatus.PENDING:
        return False
    yield count("UPDATE topups SET action_url = ? WHERE reference = ?", url, reference)
    yield from _notice(t.account_id, "needs_confirmation", f"confirm:{reference}", now, url=url, amount=t.amount)
    return True


# ---------------------------------------------------------------- notices (sent by rating_engine.notices)


def _notice(
    account_id: str, kind: str, key: str, now: int, detail: str = "", *, url: str = "", amount: int = 0
) -> Program[None]:
    """A notice to send, once per key, in the transaction of what it tells; the events no other line
    records also go to the account's audit list."""
    created = yield count(
        "INSERT INTO notices (account_id, kind, key, detail, url, amount, created_at, next_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
        account_id,
        kind,
        key,
        detail,
        url,
        amount,
        now,
        now,
    )
    action = AUDITED_NOTICES.get(kind)
    if created and action:
        yield from _audit(account_id, now, "payments" if kind != "low_balance" else "engine", action, detail or url)


AUDITED_NOTICES = {
    "low_balance": "balance below the threshold",
    "topup_done": "automatic top-up done",
    "needs_confirmation": "payment awaits the customer",
    "card_expiring": "card expiring",
}
"""Notices whose event is not already an audit line of its own (failed and paused top-ups are)."""


def claim_notices(now: int, until: int, limit: int) -> Program[list[Notice]]:
    """The notices due, now this caller's to send until `until` (another sender skips them)."""
    found = yield rows(
        "UPDATE notices SET claimed_until = ? WHERE claimed_until < ? AND id IN (SELECT id FROM notices"
        " WHERE sent_at IS NULL AND next_at <= ? AND claimed_until < ? ORDER BY id LIMIT ?)"
        " RETURNING id, account_id, kind, key, detail, url, amount, created_at, attempts",
        until,
        now,
        now,
        now,
        limit,
    )
    return sorted((Notice(**dict(r)) for r in found), key=lambda n: n.id)


def notice_sent(notice_id: int, now: int) -> Program[None]:
    yield count("UPDATE notices SET sent_at = ?, claimed_until = 0 WHERE id = ?", now, notice_id)


def notice_failed(notice_id: int, next_at: int) -> Program[None]:
    yield count(
        "UPDATE notices SET attempts = attempts + 1, next_at = ?, claimed_until = 0 WHERE id = ?", next_at, notice_id
    )


def note_expiring_cards(now: int) -> Program[int]:
    """A notice for each card on file that expires within 30 days (a card is valid through the end
    of its expiry month), once per card and expiry."""
    day = datetime.fromtimestamp(now, UTC).date()
    soon = day + timedelta(days=30)
    found = yield rows(
        "SELECT account_id, payment_method, brand, last4, exp_month, exp_year FROM cards"
        " WHERE payment_method <> '' AND exp_year * 100 + exp_month <= ?",
        soon.year * 100 + soon.month,
    )
    for r in found:
        key = f"expiring:{r['account_id']}:{r['payment_method']}:{r['exp_year']}-{r['exp_month']:02d}"
        shown = f"{r['brand']} •••• {r['last4']}, {r['exp_month']:02d}/{r['exp_year']}"
        yield from _notice(r["account_id"], "card_expiring", key, now, shown)
    return len(found)


# ---------------------------------------------------------------- the card on file

_CARD_COLUMNS = "account_id, provider, customer, payment_method, brand, last4, exp_month, exp_year"


def get_card(account_id: str) -> Program[Card | None]:
    r = yield one(f"SELECT {_CARD_COLUMNS} FROM cards WHERE account_id = ?", account_id)
    return None if r is None else Card(**dict(r))


def card_of_customer(provider: str, customer: str) -> Program[Card | None]:
    r = yield one(f"SELECT {_CARD_COLUMNS} FROM cards WHERE provider = ? AND customer = ?", provider, customer)
    return None if r is None else Card(**dict(r))


def set_customer(account_id: str, provider: str, customer: str, now: int) -> Program[Card]:
    """The account's customer at the provider (made on the first "Edit"); kept once made."""
    yield from get_account(account_id)
    yield count(
        "INSERT INTO cards (account_id, provider, customer, updated_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (account_id) DO NOTHING",
        account_id,
        provider,
        customer,
        now,
    )
    card = yield from get_card(account_id)
    assert card is not None
    return card


def save_card(card: Card, now: int, actor: str) -> Program[bool]:
    """The card the provider reports for the account's customer (saved, or updated by the bank);
    the administrator acted, so a paused automatic top-up tries again. False if nothing changed."""
    before = yield from get_card(card.account_id)
    if before is None or before.customer != card.customer or before.provider != card.provider:
        raise LedgerError(f"no customer {card.customer!r} for account {card.account_id!r}")
    if before == card:
        return False
    yield count(
        "UPDATE cards SET payment_method = ?, brand = ?, last4 = ?, exp_month = ?, exp_year = ?, updated_at = ?"
        " WHERE account_id = ?",
        card.payment_method,
        card.brand,
        card.last4,
        card.exp_month,
        card.exp_year,
        now,
        card.account_id,
    )
    shown = f"{card.brand} •••• {card.last4}, {card.exp_month:02d}/{card.exp_year}"
    yield from _audit(card.account_id, now, actor, "card saved", shown)
    yield from _resume_auto_topup(card.account_id, now, actor)
    return True


def remove_card(account_id: str, payment_method: str, now: int, actor: str) -> Program[bool]:
    """The card was detached at the provider: no card on file (the customer stays)."""
    gone = yield count(
        "UPDATE cards SET payment_method = '', brand = '', last4 = '', exp_month = 0, exp_year = 0, updated_at = ?"
        " WHERE account_id = ? AND payment_method = ? AND payment_method <> ''",
        now,
        account_id,
        payment_method,
    )
    if gone:
        yield from _audit(account_id, now, actor, "card removed", "")
    return bool(gone)


def record_event(event_id: str, event_type: str, now: int) -> Program[bool]:
    """True the first time a provider's event is seen: a replayed or duplicated one changes nothing.
    Recorded in the same transaction as what the event does (see `Ledger.handle_event`)."""
    if (yield one("SELECT id FROM webhook_events WHERE id = ?", event_id)) is not None:
        return False
    yield count("INSERT INTO webhook_events (id, type, received_at) VALUES (?, ?, ?)", event_id, event_type, now)
    return True


def event_once(
    event_id: str, event_type: str, now: int, action: Callable[..., Program[T]], *args: Any
) -> Program[T | None]:
    """`action` the first time this event is seen, in the transaction that records it (a crash
    between the two cannot apply it twice or lose it); None for an event seen before."""
    if not (yield from record_event(event_id, event_type, now)):
        return None
    return (yield from action(*args))


def pending_topups() -> Program[list[Topup]]:
    """Every account's top-ups awaiting an outcome, oldest first (the operator's to-do list)."""
    found = yield rows("SELECT * FROM topups WHERE status = ? ORDER BY at, reference", TopupStatus.PENDING.value)
    return [_topup(r) for r in found]


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
    check_extension(ext)
    yield from get_account(account_id)
    classes = None if s.classes is None else ",".join(sorted(s.classes))
    yield count(_EXT_DEFAULT, account_id, ext, account_id)
    yield count(
        "UPDATE extensions SET chargeable = ?, classes = ?, daily_cap = ?, monthly_cap = ?, max_calls = ?,"
        " max_attempts = ?, name = ?, settings_rev = settings_rev + 1 WHERE account_id = ? AND ext = ?",
        int(s.chargeable),
        classes,
        s.daily_cap,
        s.monthly_cap,
        s.max_calls,
        s.max_attempts,
        s.name.strip(),
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

# Holding money for a call takes from two budgets, the extension's (caps, concurrent calls,
# attempts per minute) and then the account's (balance above the floor, concurrent calls,
# attempts per minute, velocity), each with one conditional UPDATE: whatever the number of
# engines, no limit can be passed. A new call also counts one live call and one attempt.
_CAPS = (
    " day_spent = CASE WHEN day = ? THEN day_spent ELSE 0 END, day = ?,"
    " month_spent = CASE WHEN month = ? THEN month_spent ELSE 0 END, month = ?"
    " WHERE account_id = ? AND ext = ? AND chargeable = 1"
    " AND (daily_cap IS NULL OR (CASE WHEN day = ? THEN day_spent ELSE 0 END) + reserved + ? <= daily_cap)"
    " AND (monthly_cap IS NULL OR (CASE WHEN month = ? THEN month_spent ELSE 0 END) + reserved + ? <= monthly_cap)"
)
_NEW_CALL = (
    " live_calls = live_calls + 1,"
    " attempts = CASE WHEN attempt_minute = ? THEN attempts + 1 ELSE 1 END, attempt_minute = ?,"
)
_NEW_CALL_LIMITS = (
    " AND (max_calls IS NULL OR live_calls < max_calls)"
    " AND (max_attempts IS NULL OR attempt_minute <> ? OR attempts < max_attempts)"
)
_EXT_TAKE = "UPDATE extensions SET reserved = reserved + ?," + _CAPS
_EXT_TAKE_NEW = "UPDATE extensions SET reserved = reserved + ?," + _NEW_CALL + _CAPS + _NEW_CALL_LIMITS
_ACCOUNT_RETURNING = " RETURNING reserved, velocity_limit, velocity_alert_at"
_ACCOUNT_TAKE = (
    "UPDATE accounts SET reserved = reserved + ? WHERE id = ? AND balance - reserved - floor >= ?" + _ACCOUNT_RETURNING
)
_ACCOUNT_TAKE_NEW = (
    "UPDATE accounts SET reserved = reserved + ?," + _NEW_CALL.rstrip(",") + " WHERE id = ?"
    " AND balance - reserved - floor >= ?" + _NEW_CALL_LIMITS + _ACCOUNT_RETURNING
)


def _take(
    account_id: str, ext: str, amount: int, now: int, timezone: str, new_call: bool
) -> Program[tuple[Refusal | None, bool]]:
    """Hold `amount` against both budgets, or refuse and say why (and whether that raised an alert).

    A refusal leaves nothing held: what was taken is given back here, by the program itself,
    so a driver never has to roll one program back alone. A refused attempt is not counted.
    """
    day, month = periods(now, timezone)
    minute = now // 60
    caps = (day, day, month, month, account_id, ext, day, amount, month, amount)
    ext_args: tuple[Any, ...]
    if new_call:
        ext_sql, ext_args = _EXT_TAKE_NEW, (amount, minute, minute, *caps, minute)
    else:
        ext_sql, ext_args = _EXT_TAKE, (amount, *caps)
    n = yield count(ext_sql, *ext_args)
    created = False
    if n == 0:  # refused, or the first call of this extension: give it the default rules and take again
        created = bool((yield count(_EXT_DEFAULT, account_id, ext, account_id)))
        # Again even if not created here: another call may have created the row meanwhile.
        n = yield count(ext_sql, *ext_args)
        if n == 0:
            refusal = yield from _extension_refusal(account_id, ext, minute, new_call)
            yield from _forget_extension(account_id, ext, created)
            return refusal, False
    calls = int(new_call)
    if new_call:
        acc = yield one(_ACCOUNT_TAKE_NEW, amount, minute, minute, account_id, amount, minute)
    else:
        acc = yield one(_ACCOUNT_TAKE, amount, account_id, amount)
    if acc is None:
        yield from _untake_extension(account_id, ext, amount, calls, created)
        return (yield from _account_refusal(account_id, amount, minute, new_call)), False
    if acc["velocity_limit"] is not None:
        spent = yield one(
            "SELECT COALESCE(SUM(cost), 0) AS spent FROM activity WHERE account_id = ? AND ended_at > ?",
            account_id,
            now - HOUR,
        )
        if int(spent["spent"]) + int(acc["reserved"]) > int(acc["velocity_limit"]):
            yield count(
                "UPDATE accounts SET reserved = reserved - ?, live_calls = live_calls - ?, attempts = attempts - ?"
                " WHERE id = ?",
                amount,
                calls,
                calls,
                account_id,
            )
            yield from _untake_extension(account_id, ext, amount, calls, created)
            alert = acc["velocity_alert_at"] <= now - HOUR
            if alert:  # once an hour, not once per refused call
                yield count("UPDATE accounts SET velocity_alert_at = ? WHERE id = ?", now, account_id)
                limit, held = int(acc["velocity_limit"]), int(spent["spent"]) + int(acc["reserved"]) - amount
                yield from _audit(
                    account_id,
                    now,
                    "engine",
                    "velocity limit reached",
                    f"spent and held in the last hour {held}, call needing {amount}, limit {limit} (micro-units)",
                )
            return Refusal.VELOCITY_LIMIT, alert
    return None, False


def _untake_extension(account_id: str, ext: str, amount: int, calls: int, created: bool) -> Program[None]:
    """Give back what `_take` took of the extension: the holds, and a new call's attempt (it was refused).
    Its days stay moved on, and its attempt minute is now's: nothing counted in it."""
    yield count(
        "UPDATE extensions SET reserved = reserved - ?, live_calls = live_calls - ?, attempts = attempts - ?"
        " WHERE account_id = ? AND ext = ?",
        amount,
        calls,
        calls,
        account_id,
        ext,
    )
    yield from _forget_extension(account_id, ext, created)


def _extension_refusal(account_id: str, ext: str, minute: int, new_call: bool) -> Program[Refusal]:
    e = yield one(
        "SELECT chargeable, max_calls, live_calls, max_attempts, attempts, attempt_minute FROM extensions"
        " WHERE account_id = ? AND ext = ?",
        account_id,
        ext,
    )
    if e is None:
        return Refusal.UNKNOWN_ACCOUNT
    if not e["chargeable"]:
        return Refusal.EXTENSION_NOT_ALLOWED
    return _limit_refusal(e, minute, new_call) or Refusal.CAP_REACHED


def _account_refusal(account_id: str, amount: int, minute: int, new_call: bool) -> Program[Refusal]:
    r = yield one(f"SELECT {ACCOUNT_COLUMNS}, attempts, attempt_minute FROM accounts WHERE id = ?", account_id)
    if r is None:
        return Refusal.UNKNOWN_ACCOUNT
    return _limit_refusal(r, minute, new_call) or _account(r).shortfall(amount)


def _limit_refusal(r: Row, minute: int, new_call: bool) -> Refusal | None:
    return limit_refusal(
        r["max_calls"], r["live_calls"], r["max_attempts"], r["attempts"], r["attempt_minute"], minute, new_call
    )


def limit_refusal(
    max_calls: int | None,
    live_calls: int,
    max_attempts: int | None,
    attempts: int,
    attempt_minute: int,
    minute: int,
    new_call: bool,
) -> Refusal | None:
    """Which per-call limit of an account or an extension refused a new call, if one did (the same
    tests as the UPDATEs'). The programs' reason, and the walk's (`sqlite_batch`)."""
    if not new_call:
        return None
    if max_calls is not None and live_calls >= max_calls:
        return Refusal.TOO_MANY_CALLS
    if max_attempts is not None and attempt_minute == minute and attempts >= max_attempts:
        return Refusal.RATE_LIMITED
    return None


def _forget_extension(account_id: str, ext: str, created: bool) -> Program[None]:
    """A refused first call leaves no trace of its extension either."""
    if created:
        yield count("DELETE FROM extensions WHERE account_id = ? AND ext = ?", account_id, ext)


def reserve(
    call_id: str,
    account_id: str,
    ext: str,
    amount: int,
    now: int,
    deadline: int = 0,
    details: str = "",
    expect: tuple[int, int] | None = None,
) -> Program[ReserveResult]:
    """Hold `amount` for a new call. `expect`: the account's and the extension's `settings_rev` (0 for
    an extension without a row) the call was decided with; if either changed, nothing is held."""
    check_amount(amount, "a reservation")
    values = (call_id, account_id, ext, amount, now, now, deadline, details, account_id)
    if expect is None:
        inserted = yield one(_HOLD_ANY, *values, call_id)
    else:  # the revisions checked in the same statement: one fewer for every call
        inserted = yield one(_HOLD_SAME, *values, expect[0], account_id, ext, expect[1], call_id)
    if inserted is None:
        if expect is not None:
            r = yield one(SETTINGS_REVS, ext, account_id)
            if r is not None and (r["a"], r["e"] or 0) != expect:
                return ReserveResult(False, Refusal.SETTINGS_CHANGED)
        if (yield one("SELECT id FROM accounts WHERE id = ?", account_id)) is None:
            return ReserveResult(False, Refusal.UNKNOWN_ACCOUNT)
        return ReserveResult(False, Refusal.DUPLICATE_CALL)
    refusal, alert = yield from _take(account_id, ext, amount, now, inserted["timezone"], new_call=True)
    if refusal is not None:
        yield count("DELETE FROM reservations WHERE call_id = ?", call_id)
        return ReserveResult(False, refusal, alert=alert)
    return ReserveResult(True, None, amount)


_HOLD = (  # a new call's reservation, if its account exists …
    "INSERT INTO reservations (call_id, account_id, ext, amount, created_at, updated_at, deadline, details)"
    " SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM accounts WHERE id = ?"
)
_HOLD_END = (  # … and the call was not settled already
    " AND NOT EXISTS (SELECT 1 FROM activity WHERE call_id = ?) ON CONFLICT DO NOTHING RETURNING " + TZ
)
_HOLD_ANY = _HOLD + ")" + _HOLD_END
_HOLD_SAME = (  # … with the settings still those the call was decided with
    _HOLD
    + " AND settings_rev = ?)"
    + " AND COALESCE((SELECT settings_rev FROM extensions WHERE account_id = ? AND ext = ?), 0) = ?"
    + _HOLD_END
)
SETTINGS_REVS = (
    "SELECT y.settings_rev AS a, x.settings_rev AS e FROM accounts y"
    " LEFT JOIN extensions x ON x.account_id = y.id AND x.ext = ? WHERE y.id = ?"
)


# A call's later operations take its reservation row first, before its extension and its account
# (a new call's row comes first too: `reserve` inserts it before it takes): on PostgreSQL, where
# two of them can run at once in two transactions, the row lock makes the second wait for the first
# to commit and then see what it did. A renewal that only read the row could add to both holds for
# a reservation a settle had just taken away, and the two would wait on each other in opposite
# orders (settle: reservation, extension; renewal: extension, reservation). The batch function
# locks its calls' rows first as well (`pg_batch`).
_TAKE_CALL = (
    f"UPDATE reservations SET updated_at = updated_at WHERE call_id = ? RETURNING account_id, ext, amount, {TZ}"
)
"""The renewal's read of its reservation, the row locked until the end of the transaction."""
_GIVE_CALL_BACK = f"DELETE FROM reservations WHERE call_id = ? RETURNING account_id, ext, amount, {TZ}"
"""The end of a call: taking the reservation away is what makes a settle or a release happen once."""


def extend(call_id: str, amount: int, now: int, deadline: int = 0) -> Program[ReserveResult]:
    """Add to a live reservation under the same rule as `reserve` (not a new call: no call or attempt counted)."""
    check_amount(amount, "an extension of a reservation")
    r = yield one(_TAKE_CALL, call_id)
    if r is None:
        return ReserveResult(False, Refusal.UNKNOWN_CALL)
    refusal, alert = yield from _take(r["account_id"], r["ext"], amount, now, r["timezone"], new_call=False)
    if refusal is not None:
        return ReserveResult(False, refusal, alert=alert)
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
    """Return a reservation to the extension's budget (the call ends); `spent` counts against its caps."""
    day, month = periods(now, r["timezone"])
    yield count(
        "UPDATE extensions SET reserved = reserved - ?, live_calls = live_calls - 1,"
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
    r = yield one(_GIVE_CALL_BACK, call_id)
    if r is None:
        return False
    yield from _give_back(r, 0, now)
    yield count(
        "UPDATE accounts SET reserved = reserved - ?, live_calls = live_calls - 1 WHERE id = ?",
        r["amount"],
        r["account_id"],
    )
    return True


def settle(call_id: str, cost: int, d: CallDetails, now: int) -> Program[SettleResult]:
    """Debit the cost, release the rest, write the activity row; once per call."""
    check_amount(cost, "a cost", zero=True)
    # Taking the reservation away is what makes a settle happen once: a second settle finds none.
    r = yield one(_GIVE_CALL_BACK, call_id)
    if r is None:
        done = yield one("SELECT cost, balance_after FROM activity WHERE call_id = ?", call_id)
        if done is not None:
            return SettleResult(False, already=True, cost=done["cost"], balance_after=done["balance_after"])
        return SettleResult(False, unknown=True)
    account_id = r["account_id"]
    yield from _give_back(r, cost, now)
    acc = yield one(
        "UPDATE accounts SET balance = balance - ?, reserved = reserved - ?, live_calls = live_calls - 1 WHERE id = ?"
        " RETURNING balance, threshold, on_low, topup_pending, topup_amount, topup_paused, auto_topups_per_day,"
        " currency",
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
    # `day` (the account's calendar) feeds the daily sums, kept by a trigger of the schema (version 4).
    yield count(
        "INSERT INTO activity (call_id, account_id, ext, started_at, ended_at, dialed, e164, destination, kind,"
        " billable_seconds, cost, reserved, balance_after, estimated, overdraft, day)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        periods(d.ended_at or now, r["timezone"])[0],
    )
    crossed = balance < acc["threshold"] <= balance + cost
    if crossed:  # told once, by a notice
        yield from _notice(account_id, "low_balance", f"low:{account_id}:{call_id}", now)
    request = None
    if acc["on_low"] == OnLow.TOPUP.value and balance < acc["threshold"] and acc["topup_pending"] is None:
        request = yield from _auto_topup(account_id, call_id, balance, acc, r["timezone"], now)
    return SettleResult(
        True,
        cost=cost,
        reserved=r["amount"],
        overdraft=cost > r["amount"],
        balance_after=balance,
        topup=request,
        crossed_threshold=crossed,
    )


def _auto_topup(
    account_id: str, call_id: str, balance: int, acc: Row, timezone: str, now: int
) -> Program[TopupRequest | None]:
    """The automatic top-up a settle below the threshold asks for, if the policy allows one: not
    paused after failures, fewer than the account's daily number attempted today (in its own
    calendar), none in flight. It tops up to the threshold plus the top-up amount, in whole minor
    units of the currency (what a card can be charged)."""
    if acc["topup_paused"]:
        return None
    day_start = day_started(now, timezone)
    tried = yield one(
        "SELECT COUNT(*) AS n FROM topups WHERE account_id = ? AND source = 'auto' AND at >= ?", account_id, day_start
    )
    if int(tried["n"]) >= int(acc["auto_topups_per_day"]):
        return None
    amount = topup_to_target(balance, int(acc["threshold"]), int(acc["topup_amount"]), acc["currency"])
    reference = f"auto:{account_id}:{call_id}"
    taken = yield count(
        "UPDATE accounts SET topup_pending = ? WHERE id = ? AND topup_pending IS NULL", reference, account_id
    )
    if not taken:
        return None
    yield count(
        "INSERT INTO topups (reference, account_id, amount, at, source, status) VALUES (?, ?, ?, ?, 'auto', 'pending')",
        reference,
        account_id,
        amount,
        now,
    )
    return TopupRequest(reference, account_id, amount)


def topup_to_target(balance: int, threshold: int, topup_amount: int, currency: str) -> int:
    """What brings `balance` to threshold + top-up amount, rounded up to the currency's minor unit
    (never less than the top-up amount's own rounding, never zero)."""
    unit = MICRO // 10 ** minor_units(currency)
    wanted = max(threshold + topup_amount - balance, topup_amount, unit)
    return int(min(-(-wanted // unit), MAX_AMOUNT // unit) * unit)


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


_ACTIVITY_COLUMNS = (
    "call_id, account_id, ext, started_at, ended_at, dialed, e164, destination, kind, billable_seconds,"
    " cost, balance_after, estimated, overdraft"
)


def _where(account_id: str, *optional: tuple[str, object]) -> tuple[str, list[Any]]:
    """`account_id = ?` and each (clause, value) whose value is given, with their parameters."""
    sql = "account_id = ?"
    params: list[Any] = [account_id]
    for clause, value in optional:
        if value is not None:
            sql += f" AND {clause}"
            params.append(value)
    return sql, params


def _activity_where(account_id: str, ext: str | None, since: int | None, until: int | None) -> tuple[str, list[Any]]:
    return _where(account_id, ("ext = ?", ext), ("ended_at >= ?", since), ("ended_at < ?", until))


def _activity_row(r: Row) -> ActivityRow:
    return ActivityRow(**{**dict(r), "estimated": bool(r["estimated"]), "overdraft": bool(r["overdraft"])})


def activity(account_id: str, ext: str | None, since: int | None, until: int | None) -> Program[list[ActivityRow]]:
    yield from get_account(account_id)
    where, params = _activity_where(account_id, ext, since, until)
    found = yield rows(f"SELECT {_ACTIVITY_COLUMNS} FROM activity WHERE {where} ORDER BY ended_at, call_id", *params)
    return [_activity_row(r) for r in found]


def activity_page(
    account_id: str,
    ext: str | None,
    since: int | None,
    until: int | None,
    before: tuple[int, str] | None,
    limit: int,
) -> Program[list[ActivityRow]]:
    """Newest first, `limit` rows ending before `before` (ended_at, call_id): a keyset page, as fast
    on the millionth row as on the first (an index walk, never an OFFSET)."""
    yield from get_account(account_id)
    where, params = _activity_where(account_id, ext, since, until)
    if before is not None:
        where += " AND (ended_at, call_id) < (?, ?)"  # a row value: one index range, on both backends
        params += [before[0], before[1]]
    found = yield rows(
        f"SELECT {_ACTIVITY_COLUMNS} FROM activity WHERE {where} ORDER BY ended_at DESC, call_id DESC LIMIT ?",
        *params,
        max(1, min(limit, 10_000)),
    )
    return [_activity_row(r) for r in found]


def activity_day_totals(
    account_id: str, ext: str | None, first_day: str | None, last_day: str | None
) -> Program[list[ExtensionTotals]]:
    """Totals per extension over whole days of the account's own calendar (YYYY-MM-DD, both
    included), from the daily sums kept at each settle: a year of a busy account is a few thousand
    rows to add, not a million."""
    yield from get_account(account_id)
    sql, params = _where(account_id, ("ext = ?", ext), ("day >= ?", first_day), ("day <= ?", last_day))
    found = yield rows(
        "SELECT ext, SUM(calls) AS calls, SUM(seconds) AS seconds, SUM(cost) AS cost"
        f" FROM activity_days WHERE {sql} GROUP BY ext ORDER BY ext",
        *params,
    )
    return [ExtensionTotals(r["ext"], int(r["calls"]), int(r["seconds"]), int(r["cost"])) for r in found]


def activity_days(account_id: str, ext: str | None, first_day: str, last_day: str) -> Program[list[DaySpending]]:
    """Spending per day and extension (days with none left out), from the same daily sums."""
    yield from get_account(account_id)
    sql, params = _where(account_id, ("ext = ?", ext), ("day >= ?", first_day), ("day <= ?", last_day))
    found = yield rows(f"SELECT day, ext, cost FROM activity_days WHERE {sql} AND cost > 0 ORDER BY day, ext", *params)
    return [DaySpending(str(r["day"]), r["ext"], int(r["cost"])) for r in found]


def _totals(table: str, column: str, where: str = "TRUE") -> Program[dict[str, int]]:
    """SUM(column) per account (the check's four sums; the arguments are this module's literals)."""
    found = yield rows(f"SELECT account_id, SUM({column}) AS total FROM {table} WHERE {where} GROUP BY account_id")
    return {r["account_id"]: int(r["total"]) for r in found}


def check() -> Program[list[CheckProblem]]:
    """Prove every balance equals its journal and every hold equals its live reservations."""
    problems: list[CheckProblem] = []
    journal = yield from _totals("journal", "amount")
    held = yield from _totals("reservations", "amount")
    debits = yield from _totals("activity", "cost")
    journal_debits = yield from _totals("journal", "-amount", "entry = 'debit'")
    by_day = yield from _totals("activity_days", "cost")
    accounts = yield rows("SELECT id, balance, reserved FROM accounts ORDER BY id")
    known = {a["id"] for a in accounts}
    # On PostgreSQL these tables keep their account without a foreign key (schema version 8)
    tables = {"journal": journal, "reservations": held, "activity": debits, "activity_days": by_day}
    for table, totals in tables.items():
        for aid in sorted(totals.keys() - known):
            problems.append(CheckProblem(aid, f"rows of {table} name this account, which does not exist"))
    for a in accounts:
        aid = a["id"]
        if a["balance"] != journal.get(aid, 0):
            problems.append(CheckProblem(aid, f"balance {a['balance']} != journal total {journal.get(aid, 0)}"))
        if a["reserved"] != held.get(aid, 0):
            problems.append(CheckProblem(aid, f"reserved {a['reserved']} != live reservations {held.get(aid, 0)}"))
        if by_day.get(aid, 0) != debits.get(aid, 0):
            problems.append(
                CheckProblem(aid, f"daily sums {by_day.get(aid, 0)} != activity costs {debits.get(aid, 0)}")
            )
        if debits.get(aid, 0) != journal_debits.get(aid, 0):
            problems.append(
                CheckProblem(aid, f"activity costs {debits.get(aid, 0)} != journal debits {journal_debits.get(aid, 0)}")
            )
    ext_held = yield rows(
        "SELECT e.account_id, e.ext, e.reserved, e.live_calls, COALESCE(SUM(r.amount), 0) AS live,"
        " COUNT(r.call_id) AS calls FROM extensions e"
        " LEFT JOIN reservations r ON r.account_id = e.account_id AND r.ext = e.ext"
        " GROUP BY e.account_id, e.ext, e.reserved, e.live_calls"
    )
    for e in ext_held:
        if e["reserved"] != e["live"]:
            problems.append(
                CheckProblem(
                    e["account_id"], f"extension {e['ext']} holds {e['reserved']} != live reservations {e['live']}"
                )
            )
        if e["live_calls"] != e["calls"]:
            problems.append(
                CheckProblem(
                    e["account_id"], f"extension {e['ext']} counts {e['live_calls']} live calls != {e['calls']}"
                )
            )
    live = yield rows(
        "SELECT a.id, a.live_calls, COUNT(r.call_id) AS calls FROM accounts a"
        " LEFT JOIN reservations r ON r.account_id = a.id GROUP BY a.id, a.live_calls"
    )
    for a in live:
        if a["live_calls"] != a["calls"]:
            problems.append(CheckProblem(a["id"], f"counts {a['live_calls']} live calls != {a['calls']} reservations"))
    return problems


def annotate(call_id: str, deadline: int, details: str) -> Program[bool]:
    """Record a live call's deadline and details (answer time, price) for reconciliation.

    One statement, and it must stay one: on PostgreSQL a lone note runs without a transaction."""
    n = yield count("UPDATE reservations SET deadline = ?, details = ? WHERE call_id = ?", deadline, details, call_id)
    return bool(n)


_CALLER_EXTENSION = (
    "ext",
    "chargeable",
    "classes",
    "daily_cap",
    "monthly_cap",
    "max_calls",
    "max_attempts",
    "name",
    "reserved",
    "day",
    "day_spent",
    "month",
    "month_spent",
    "live_calls",
    "settings_rev",
)
CALLER_COLUMNS = (
    ", ".join(f"y.{c} AS {c}" for c in (c.strip() for c in ACCOUNT_COLUMNS.split(",")))
    + ", x.ext IS NOT NULL AS x_found, "
    + ", ".join(f"x.{c} AS x_{c}" for c in _CALLER_EXTENSION)
)
"""An account (`y`) and one of its extensions (`x`, joined on the left, its columns named x_…), as
one row: the authorization's read in one statement."""


def caller_of(r: Row) -> tuple[Account, Extension | None]:
    """The account and the extension of a row of `CALLER_COLUMNS`."""
    extension = None
    if r["x_found"]:
        extension = _extension({"account_id": r["id"], **{c: r[f"x_{c}"] for c in _CALLER_EXTENSION}})
    return _account(r), extension


def caller(account_id: str, ext: str) -> Program[tuple[Account | None, Extension | None]]:
    """An account and one of its extensions, in one statement (the authorization's read)."""
    r = yield one(
        f"SELECT {CALLER_COLUMNS} FROM accounts y LEFT JOIN extensions x ON x.account_id = y.id AND x.ext = ?"
        " WHERE y.id = ?",
        ext,
        account_id,
    )
    return (None, None) if r is None else caller_of(r)
