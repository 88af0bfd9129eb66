"""The call path's operations on SQLite, a batch at a time: read once, work in memory, write once.

Run as programs, a reservation and its settle take eight statements, each updating the account's
row again (a hot account's row a hundred times in one group commit). SQLite runs one writer at a
time, so those statements in the database thread are the ledger's limit. Here a run of the call
path's operations (reserve, extend, release, settle, annotate) in one batch reads the rows it names
in four statements, runs the operations on that state in Python, and writes what changed with one
statement per table and kind of change. It is the PostgreSQL function's walk (`pg_batch`), written
for the database thread: the same common case, the same hand-back. An operation that a velocity
limit would refuse, or that raises a notice or an automatic top-up, or a renewal of an extension
without a row, or a call already held or settled being reserved again, stops the walk: what was
done is written, that operation runs as its program, and the walk starts again after it with the
rows read afresh. A reservation or a renewal that a cap, a limit, the extension's rules or the
money refuses is answered by the walk itself, with the programs' reason and what they leave behind
(`_Walk._refused`). So the rules stay in `programs.py`, and the equivalence test runs both on the
same rounds.

Everything here runs inside the batch's transaction, in the database thread: no other writer can
change a row between the read and the write.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Literal, TypeVar

from ..contract import Refusal
from .call_path import result
from .models import CallDetails, ReserveResult, periods, shortfall
from .programs import limit_refusal

Op = tuple[str, tuple[Any, ...]]
K = TypeVar("K")
V = TypeVar("V")

_IN_JSON = "SELECT value FROM json_each(?)"  # the keys, sent as one JSON array
_READ_CALLS = (
    "SELECT call_id, account_id, ext, amount, created_at, updated_at, deadline, details FROM reservations"
    f" WHERE call_id IN ({_IN_JSON})"
)
_READ_DONE = f"SELECT call_id FROM activity WHERE call_id IN ({_IN_JSON})"
_READ_ACCOUNTS = (
    "SELECT id, timezone, balance, reserved, floor, threshold, on_low, topup_pending, velocity_limit, max_calls,"
    f" max_attempts, live_calls, attempts, attempt_minute, settings_rev FROM accounts WHERE id IN ({_IN_JSON})"
)
_READ_EXTENSIONS = (
    "SELECT account_id, ext, chargeable, daily_cap, monthly_cap, max_calls, max_attempts, reserved, live_calls,"
    " attempts, attempt_minute, day, day_spent, month, month_spent, settings_rev FROM extensions"
    " WHERE (account_id, ext) IN (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?))"
)
_MAKE_EXTENSION = "INSERT INTO extensions (account_id, ext) VALUES (?, ?)"
_FORGET_EXTENSION = "DELETE FROM extensions WHERE account_id = ? AND ext = ?"
_WRITE_EXTENSION = (
    "UPDATE extensions SET reserved = ?, live_calls = ?, attempts = ?, attempt_minute = ?, day = ?, day_spent = ?,"
    " month = ?, month_spent = ? WHERE account_id = ? AND ext = ?"
)
_WRITE_ACCOUNT = (
    "UPDATE accounts SET balance = ?, reserved = ?, live_calls = ?, attempts = ?, attempt_minute = ? WHERE id = ?"
)
_GONE = "DELETE FROM reservations WHERE call_id = ?"
_CHANGED = "UPDATE reservations SET amount = ?, updated_at = ?, deadline = ?, details = ? WHERE call_id = ?"
_NEW = (
    "INSERT INTO reservations (call_id, account_id, ext, amount, created_at, updated_at, deadline, details)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_JOURNAL = (
    "INSERT INTO journal (account_id, at, entry, amount, reference, balance_after) VALUES (?, ?, 'debit', ?, ?, ?)"
)
_ACTIVITY = (
    "INSERT INTO activity (call_id, account_id, ext, started_at, ended_at, dialed, e164, destination, kind,"
    " billable_seconds, cost, reserved, balance_after, estimated, overdraft, day)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SPENT = "SELECT COALESCE(SUM(cost), 0) FROM activity WHERE account_id = ? AND ended_at > ?"
HOUR = 3600

# a reservation's state: read as it is, changed, new in this walk, taken away, new and taken away again
STORED, CHANGED, NEW, GONE, NEW_GONE = 1, 2, 3, 4, 5
HELD = (STORED, CHANGED, NEW)


class _Account:
    __slots__ = (
        "att",
        "att_min",
        "balance",
        "dirty",
        "floor",
        "id",
        "live",
        "max_att",
        "max_calls",
        "on_low",
        "pending",
        "reserved",
        "rev",
        "threshold",
        "tz",
        "velocity",
    )

    def __init__(self, r: sqlite3.Row) -> None:
        (self.id, self.tz, self.balance, self.reserved, self.floor, self.threshold, self.on_low, self.pending,
         self.velocity, self.max_calls, self.max_att, self.live, self.att, self.att_min, self.rev) = r  # fmt: skip
        self.dirty = False


class _Extension:
    __slots__ = (
        "account_id",
        "att",
        "att_min",
        "chargeable",
        "daily",
        "day",
        "day_spent",
        "dirty",
        "ext",
        "live",
        "made",
        "max_att",
        "max_calls",
        "month",
        "month_spent",
        "monthly",
        "reserved",
        "rev",
    )

    def __init__(self, r: sqlite3.Row, made: bool) -> None:
        (self.account_id, self.ext, self.chargeable, self.daily, self.monthly, self.max_calls, self.max_att,
         self.reserved, self.live, self.att, self.att_min, self.day, self.day_spent, self.month, self.month_spent,
         self.rev) = r  # fmt: skip
        self.made, self.dirty = made, False


class _Call:
    __slots__ = ("account_id", "amount", "created", "deadline", "details", "ext", "state", "updated")

    def __init__(self, state: int, r: Any = None) -> None:
        self.state = state
        if r is not None:
            _id, self.account_id, self.ext, self.amount, self.created, self.updated, self.deadline, self.details = r


class Kept:
    """The rows the last walks ended with, as the file now holds them: the next walk starts from them
    instead of reading them again (on a hot account, the same account and extension rows, and the
    reservations made one batch earlier, are read in every batch: about an eighth of the database
    thread's time per pair).

    They are the file's rows only while no one else wrote them. So they are dropped when another
    connection has committed since the last batch (`PRAGMA data_version`, read inside the batch's
    write lock), when a program of this connection wrote anything, and when a batch does not commit.
    A row not kept is read, as before. Used by the database thread alone."""

    __slots__ = ("accounts", "calls", "extensions", "version")

    def __init__(self) -> None:
        self.accounts: dict[str, _Account] = {}
        self.extensions: dict[tuple[str, str], _Extension] = {}
        self.calls: dict[str, _Call] = {}
        self.version: int | None = None

    def clear(self) -> None:
        self.accounts.clear()
        self.extensions.clear()
        self.calls.clear()

    def check(self, cur: sqlite3.Cursor) -> None:
        """Drop the rows if another connection committed since the last batch (in the write lock)."""
        (version,) = cur.execute("PRAGMA data_version").fetchone()
        if version != self.version:
            self.clear()
            self.version = version

    def keep(self, out: _Walk) -> None:
        """After a walk's writes: its rows are the file's now."""
        if len(self.calls) + len(out.calls) > KEPT_MAX or len(self.extensions) + len(out.extensions) > KEPT_MAX:
            self.clear()
        for call_id, c in out.calls.items():
            if c.state in HELD:
                c.state = STORED
                self.calls[call_id] = c
            else:
                self.calls.pop(call_id, None)
        for key, e in out.extensions.items():
            if e.made and not e.dirty:  # deleted by the write
                self.extensions.pop(key, None)
                continue
            e.made = e.dirty = False
            self.extensions[key] = e
        for a in out.accounts.values():
            a.dirty = False
        self.accounts.update(out.accounts)


def _limit_refusal(r: _Account | _Extension, minute: int, new_call: bool) -> Refusal | None:
    return limit_refusal(r.max_calls, r.live, r.max_att, r.att, r.att_min, minute, new_call)


KEPT_MAX = 100_000
"""Rows kept beyond this: start again (a reservation that is never settled stays kept until then)."""


def walk(cur: sqlite3.Cursor, ops: list[Op], kept: Kept | None = None) -> tuple[list[Any], int]:
    """Run `ops` from the first while each goes the common way, and write what they did.

    Returns their results and how many ran: if that is fewer than `ops`, the next one is the
    programs' to run (its result is not in the list), and the walk can start again after it.
    `kept`: rows the last walks ended with (see `Kept`); they are kept again after this one."""
    kept = kept or Kept()
    calls, unread_calls = _kept_or_unread(kept.calls, {args[0] for _, args in ops})
    if unread_calls:
        calls.update((r[0], _Call(STORED, r)) for r in cur.execute(_READ_CALLS, (json.dumps(unread_calls),)))
    reserved_ids = [args[0] for op, args in ops if op == "reserve"]
    done = {r[0] for r in cur.execute(_READ_DONE, (json.dumps(reserved_ids),))} if reserved_ids else set()
    named: set[tuple[str, str]] = set()
    for op, args in ops:  # every account and extension the walk may touch
        if op == "reserve":
            named.add((args[1], args[2]))
        elif args[0] in calls:
            c = calls[args[0]]
            named.add((c.account_id, c.ext))
    accounts, unread_accounts = _kept_or_unread(kept.accounts, {a for a, _ in named})
    if unread_accounts:
        accounts.update((r[0], _Account(r)) for r in cur.execute(_READ_ACCOUNTS, (json.dumps(unread_accounts),)))
    extensions, unread_extensions = _kept_or_unread(kept.extensions, named)
    if unread_extensions:
        extensions.update(((r[0], r[1]), _Extension(r, False)) for r in _read_extensions(cur, unread_extensions))
    # A reservation's extension without a row gets one with the default rules, as the program's would; a row
    # made here that no operation used goes again when the walk writes.
    make = [
        key
        for op, args in ops
        if op == "reserve" and args[1] in accounts
        for key in [(args[1], args[2])]
        if key not in extensions
    ]
    if make:
        make = list(dict.fromkeys(make))
        cur.executemany(_MAKE_EXTENSION, make)
        extensions.update({(r[0], r[1]): _Extension(r, True) for r in _read_extensions(cur, make)})
    out = _Walk(cur, calls, done, accounts, extensions)
    ran = out.run(ops)
    out.write()
    kept.keep(out)
    return out.results, ran


def _kept_or_unread(rows: dict[K, V], keys: set[K]) -> tuple[dict[K, V], list[K]]:
    """The rows of `keys` that are kept, and the keys that must be read."""
    found = {key: rows[key] for key in keys if key in rows}
    return found, [key for key in keys if key not in found]


def _read_extensions(cur: sqlite3.Cursor, keys: Any) -> Any:
    return cur.execute(_READ_EXTENSIONS, (json.dumps([list(k) for k in keys]),))


class _Walk:
    """The state of one walk, and what it will write."""

    def __init__(
        self,
        cur: sqlite3.Cursor,
        calls: dict[str, _Call],
        done: set[str],
        accounts: dict[str, _Account],
        extensions: dict[tuple[str, str], _Extension],
    ) -> None:
        self.cur, self.calls, self.done, self.accounts, self.extensions = cur, calls, done, accounts, extensions
        self.results: list[Any] = []
        self.journal: list[tuple[Any, ...]] = []
        self.activity: list[tuple[Any, ...]] = []

    def run(self, ops: list[Op]) -> int:
        for k, (op, args) in enumerate(ops):
            got = getattr(self, op)(*args)
            if got is None:
                return k
            self.results.append(ReserveResult(False, got) if isinstance(got, Refusal) else result(op, args, *got))
        return len(ops)

    # Each operation returns the function's (a, b, c) for `call_path.result`, a reservation's or a renewal's
    # refusal, or None: the program's.
    def annotate(self, call_id: str, deadline: int, details: str) -> tuple[int, int, int]:
        c = self.calls.get(call_id)
        if c is None or c.state not in HELD:
            return 0, 0, 0
        c.deadline, c.details = deadline, details
        if c.state == STORED:
            c.state = CHANGED
        return 1, 0, 0

    def reserve(
        self,
        call_id: str,
        account_id: str,
        ext: str,
        amount: int,
        now: int,
        deadline: int = 0,
        details: str = "",
        expect: tuple[int, int] | None = None,
    ) -> tuple[int, int, int] | Refusal | None:
        c = self.calls.get(call_id)
        a = self.accounts.get(account_id)
        if c is not None or call_id in self.done or a is None:
            return None  # a call already held or settled, or an account not here
        e = self.extensions.get((account_id, ext))
        if expect is not None and (a.rev != expect[0] or (e.rev if e is not None else 0) != expect[1]):
            return None  # decided with settings that have changed since
        if e is None:
            return None
        taken = self._take(a, e, amount, now, new_call=True)
        if taken is not True:
            return taken
        minute = now // 60
        e.live += 1
        e.att = e.att + 1 if e.att_min == minute else 1
        e.att_min = minute
        a.live += 1
        a.att = a.att + 1 if a.att_min == minute else 1
        a.att_min = minute
        c = self.calls[call_id] = _Call(NEW)
        c.account_id, c.ext, c.amount, c.created, c.updated = account_id, ext, amount, now, now
        c.deadline, c.details = deadline, details
        return amount, 0, 0

    def extend(self, call_id: str, amount: int, now: int, deadline: int = 0) -> tuple[int, int, int] | Refusal | None:
        c = self.calls.get(call_id)
        if c is None or c.state not in HELD:
            return None
        a, e = self.accounts.get(c.account_id), self.extensions.get((c.account_id, c.ext))
        if a is None or e is None:
            return None
        taken = self._take(a, e, amount, now, new_call=False)
        if taken is not True:
            return taken
        c.amount += amount
        c.updated = now
        c.deadline = max(c.deadline, deadline)
        if c.state == STORED:
            c.state = CHANGED
        return c.amount, 0, 0

    def release(self, call_id: str, now: int) -> tuple[int, int, int] | None:
        c = self.calls.get(call_id)
        if c is None or c.state not in HELD:
            return 0, 0, 0
        return self._give_back(c, 0, now, None, call_id)

    def settle(self, call_id: str, cost: int, d: CallDetails | None, now: int) -> tuple[int, int, int] | None:
        c = self.calls.get(call_id)
        if c is None or c.state not in HELD:
            return None
        return self._give_back(c, cost, now, d if isinstance(d, CallDetails) else CallDetails(), call_id)

    def _take(
        self, a: _Account, e: _Extension, amount: int, now: int, *, new_call: bool
    ) -> Literal[True] | Refusal | None:
        """The programs' tests (`_CAPS`, `_NEW_CALL_LIMITS`, `_ACCOUNT_TAKE…`, the velocity limit) on
        the state as it now stands: if they pass, the amount is held against both budgets (True).
        Refused, the reason the programs give, and what they leave behind (see `_refused`); a velocity
        limit's refusal is the program's (None): it sums the hour and may raise the alert."""
        day, month = periods(now, a.tz)
        minute = now // 60
        extension_takes = (
            e.chargeable == 1
            and (e.daily is None or (e.day_spent if e.day == day else 0) + e.reserved + amount <= e.daily)
            and (e.monthly is None or (e.month_spent if e.month == month else 0) + e.reserved + amount <= e.monthly)
            and (
                not new_call
                or (
                    (e.max_calls is None or e.live < e.max_calls)
                    and (e.max_att is None or e.att_min != minute or e.att < e.max_att)
                )
            )
        )
        account_takes = a.balance - a.reserved - a.floor >= amount and (
            not new_call
            or (
                (a.max_calls is None or a.live < a.max_calls)
                and (a.max_att is None or a.att_min != minute or a.att < a.max_att)
            )
        )
        if not (extension_takes and account_takes):
            return self._refused(a, e, amount, day, month, minute, new_call, extension_takes)
        if a.velocity is not None:
            (spent,) = self.cur.execute(_SPENT, (a.id, now - HOUR)).fetchone()
            spent += sum(t[10] for t in self.activity if t[1] == a.id and t[4] > now - HOUR)
            if spent + a.reserved + amount > a.velocity:
                return None
        e.reserved += amount
        e.day_spent = e.day_spent if e.day == day else 0
        e.day = day
        e.month_spent = e.month_spent if e.month == month else 0
        e.month = month
        e.dirty = True
        a.reserved += amount
        a.dirty = True
        return True

    @staticmethod
    def _refused(
        a: _Account, e: _Extension, amount: int, day: str, month: str, minute: int, new_call: bool, extension_took: bool
    ) -> Refusal:
        """Why the programs refuse (`_extension_refusal`, then `_account_refusal`), with what they leave
        behind: nothing held, no attempt counted; refused by the account, they have taken the extension
        first and given back its holds and the attempt, so its days and its attempt minute have moved
        on to now's. A first call's row made by this walk and not used yet (the program would make it
        and delete it again) is left as made: it goes when the walk writes. Answered here, not handed
        back: an account that has run out refuses every call of every extension, and each hand-back
        ended the walk for a program and read the rows again."""
        if not extension_took:
            if e.chargeable != 1:
                return Refusal.EXTENSION_NOT_ALLOWED
            return _limit_refusal(e, minute, new_call) or Refusal.CAP_REACHED
        if not (e.made and not e.dirty):
            e.day_spent = e.day_spent if e.day == day else 0
            e.day = day
            e.month_spent = e.month_spent if e.month == month else 0
            e.month = month
            if new_call:  # counted, then given back: none counted this minute if it was another's
                e.att = e.att if e.att_min == minute else 0
                e.att_min = minute
            e.dirty = True
        return _limit_refusal(a, minute, new_call) or shortfall(a.balance, a.reserved, a.floor, amount)

    def _give_back(
        self, c: _Call, spent: int, now: int, d: CallDetails | None, call_id: str
    ) -> tuple[int, int, int] | None:
        """A release (`d` None: spent nothing) or a settle: the reservation goes back."""
        a, e = self.accounts.get(c.account_id), self.extensions.get((c.account_id, c.ext))
        if a is None or e is None:
            return None
        balance = a.balance - spent
        low = balance < a.threshold
        if d is not None and low and (a.threshold <= a.balance or (a.on_low == "topup" and a.pending is None)):
            return None  # a notice or an automatic top-up: the program's
        c.state = NEW_GONE if c.state == NEW else GONE
        held = c.amount
        day, month = periods(now, a.tz)
        e.reserved -= held
        e.live -= 1
        e.day_spent = (e.day_spent if e.day == day else 0) + spent
        e.day = day
        e.month_spent = (e.month_spent if e.month == month else 0) + spent
        e.month = month
        e.dirty = True
        a.reserved -= held
        a.live -= 1
        a.dirty = True
        if d is None:
            return 1, 0, 0
        a.balance = balance
        self.done.add(call_id)
        if spent > 0:
            self.journal.append((a.id, now, -spent, call_id, balance))
        ended = d.ended_at or now
        self.activity.append(
            (call_id, a.id, c.ext, d.started_at, ended, d.dialed, d.e164, d.destination, d.kind, d.billable_seconds,
             spent, held, balance, int(d.estimated), int(spent > held), periods(ended, a.tz)[0])
        )  # fmt: skip
        return spent, held, balance

    def write(self) -> None:
        """What the walk did, one statement per table and kind of change."""
        forget = [(e.account_id, e.ext) for e in self.extensions.values() if e.made and not e.dirty]
        self._many(_FORGET_EXTENSION, forget)
        self._many(
            _WRITE_EXTENSION,
            [
                (e.reserved, e.live, e.att, e.att_min, e.day, e.day_spent, e.month, e.month_spent, e.account_id, e.ext)
                for e in self.extensions.values()
                if e.dirty
            ],
        )
        self._many(
            _WRITE_ACCOUNT,
            [(a.balance, a.reserved, a.live, a.att, a.att_min, a.id) for a in self.accounts.values() if a.dirty],
        )
        calls = self.calls.items()
        self._many(_GONE, [(i,) for i, c in calls if c.state == GONE])
        self._many(_CHANGED, [(c.amount, c.updated, c.deadline, c.details, i) for i, c in calls if c.state == CHANGED])
        self._many(
            _NEW,
            [
                (i, c.account_id, c.ext, c.amount, c.created, c.updated, c.deadline, c.details)
                for i, c in calls
                if c.state == NEW
            ],
        )
        self._many(_JOURNAL, self.journal)
        self._many(_ACTIVITY, self.activity)

    def _many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if len(rows) == 1:
            self.cur.execute(sql, rows[0])
        elif rows:
            self.cur.executemany(sql, rows)
