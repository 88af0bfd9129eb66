"""The call path's operations on PostgreSQL, many per statement: one server-side function per batch.

A reservation and a settle take eight statements and as many round trips when run as programs,
each in its own transaction, each queuing on the account row. Here a batch of them (reserve,
extend, release, settle, annotate) is sent as arrays to `rating_engine_batch_v1`, which runs
them in order in the batch's transaction and commits once. The function only does the common
case: an operation the programs would refuse, or that raises a notice or an automatic top-up,
or whose account's time zone this engine does not know yet, is handed back untouched ("slow")
and its program runs there, in a savepoint, before the function goes on with the rest. So the
rules stay in `programs.py`; the function repeats only what they write when every check passes,
and the contract suite runs both against the same tests.

Checks before writes: the function first locks and reads every extension row, then every
account row, the batch touches, each set in key order (the programs' own order, extension before
account), so that two batches, of two writers or of two engines, cannot deadlock; with the rows
locked, a check that passes still holds at the write. Then the operations run on that state held in
the function's own arrays, and what they changed is written once at the end of the batch (or before
it hands an operation back): one UPDATE for the accounts, one for the extensions, one INSERT each
for the reservations, the journal and the activity. Row by row, PostgreSQL pays a new row version
and its WAL for each UPDATE; a hot account updated a hundred times in one transaction also makes
every later UPDATE walk the versions before it. No subtransactions: PostgreSQL slows every session
down once a transaction holds more than 64.

Every statement in it reads rows by their keys, but PL/pgSQL plans once for any batch size: a
generic plan chose to scan the whole extensions table and hash it, so the function turns off
sequential scans and hash and merge joins for itself.

Dates are the engine's: the day and month a cap counts in are computed here in Python, by
`periods`, for the time zone this engine read from the account; if the account's zone is not
that one, the function stops there and says it, and the operation is sent again with the right
days (a server's tzdata never decides a cap's day).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import programs as P
from .models import CallDetails, ReserveResult, SettleResult, periods

FUNCTION = "rating_engine_batch_v2"
"""Versioned by name: an engine only calls the function its own code installed."""

COLUMNS = (
    ("op", "text"),
    ("call", "text"),
    ("account", "text"),
    ("ext", "text"),
    ("amount", "bigint"),
    ("now", "bigint"),
    ("deadline", "bigint"),
    ("details", "text"),
    ("tz", "text"),
    ("day", "text"),
    ("month", "text"),
    ("end_day", "text"),
    ("started", "bigint"),
    ("ended", "bigint"),
    ("dialed", "text"),
    ("e164", "text"),
    ("destination", "text"),
    ("kind", "text"),
    ("billable", "bigint"),
    ("estimated", "integer"),
)
CALL = (
    f"SELECT o_i, o_fast, o_a, o_b, o_c, o_tz, o_account FROM {FUNCTION}($1, "
    + ", ".join(f"${n}::text::{kind}[]" for n, (_name, kind) in enumerate(COLUMNS, start=2))
    + ")"
)

_BODY = """
DECLARE
    v_row extensions%ROWTYPE;
    v_stop integer;
    v_stop_tz text;
    v_stop_account text;
    v_account text;
    v_key text;
    v_held bigint;
    v_fits boolean;
    v_minute bigint;
    v_spent bigint;
    v_balance bigint;
    v_created boolean;
    v_ended bigint;
    ai integer;
    ei integer;
    ri integer;
    -- each account the batch touches, locked, one slot per account
    a_id text[]; a_tz text[]; a_balance bigint[]; a_reserved bigint[]; a_floor bigint[]; a_threshold bigint[];
    a_on_low text[]; a_pending text[]; a_velocity bigint[]; a_max_calls integer[]; a_max_att integer[];
    a_live integer[]; a_att integer[]; a_att_min bigint[]; a_dirty boolean[];
    -- each extension, by "account ext" (a space is in neither)
    e_key text[]; e_account text[]; e_ext text[]; e_chargeable integer[]; e_daily bigint[]; e_monthly bigint[];
    e_max_calls integer[]; e_max_att integer[]; e_reserved bigint[]; e_live integer[]; e_att integer[];
    e_att_min bigint[]; e_day text[]; e_day_spent bigint[]; e_month text[]; e_month_spent bigint[]; e_dirty boolean[];
    -- the reservations of the batch's calls; r_state: 0 stored, 1 stored and changed, 2 new, 3 stored and gone,
    -- 4 new and gone again
    r_call text[]; r_account text[]; r_ext text[]; r_amount bigint[]; r_created bigint[]; r_updated bigint[];
    r_deadline bigint[]; r_details text[]; r_state smallint[];
    v_done text[];  -- calls of the batch already settled (stored, or settled in it)
    -- written once at the end: the journal's debits and the activity rows
    j_account text[]; j_at bigint[]; j_amount bigint[]; j_call text[]; j_balance bigint[];
    t_call text[]; t_account text[]; t_ext text[]; t_started bigint[]; t_ended bigint[]; t_dialed text[];
    t_e164 text[]; t_destination text[]; t_kind text[]; t_billable bigint[]; t_cost bigint[]; t_reserved bigint[];
    t_balance bigint[]; t_estimated integer[]; t_overdraft integer[]; t_day text[];
BEGIN
    -- Every extension row, then every account row, this batch touches: locked in key order, and read.
    SELECT array_agg(s.account_id || ' ' || s.ext), array_agg(s.account_id), array_agg(s.ext), array_agg(s.chargeable),
        array_agg(s.daily_cap), array_agg(s.monthly_cap), array_agg(s.max_calls), array_agg(s.max_attempts),
        array_agg(s.reserved), array_agg(s.live_calls), array_agg(s.attempts), array_agg(s.attempt_minute),
        array_agg(s.day), array_agg(s.day_spent), array_agg(s.month), array_agg(s.month_spent), array_agg(false)
    INTO e_key, e_account, e_ext, e_chargeable, e_daily, e_monthly, e_max_calls, e_max_att, e_reserved, e_live,
        e_att, e_att_min, e_day, e_day_spent, e_month, e_month_spent, e_dirty
    FROM (SELECT * FROM extensions x WHERE (x.account_id, x.ext) IN (
        SELECT w.a, w.e FROM unnest(p_account[p_start:], p_ext[p_start:]) AS w(a, e) WHERE w.a IS NOT NULL
        UNION SELECT r.account_id, r.ext FROM reservations r WHERE r.call_id = ANY (p_call[p_start:])
    ) ORDER BY x.account_id, x.ext FOR UPDATE) s;
    SELECT array_agg(s.id), array_agg(s.timezone), array_agg(s.balance), array_agg(s.reserved), array_agg(s.floor),
        array_agg(s.threshold), array_agg(s.on_low), array_agg(s.topup_pending), array_agg(s.velocity_limit),
        array_agg(s.max_calls), array_agg(s.max_attempts), array_agg(s.live_calls), array_agg(s.attempts),
        array_agg(s.attempt_minute), array_agg(false)
    INTO a_id, a_tz, a_balance, a_reserved, a_floor, a_threshold, a_on_low, a_pending, a_velocity, a_max_calls,
        a_max_att, a_live, a_att, a_att_min, a_dirty
    FROM (SELECT * FROM accounts y WHERE y.id IN (
        SELECT w.a FROM unnest(p_account[p_start:]) AS w(a) WHERE w.a IS NOT NULL
        UNION SELECT r.account_id FROM reservations r WHERE r.call_id = ANY (p_call[p_start:])
    ) ORDER BY y.id FOR UPDATE) s;
    SELECT array_agg(r.call_id), array_agg(r.account_id), array_agg(r.ext), array_agg(r.amount),
        array_agg(r.created_at), array_agg(r.updated_at), array_agg(r.deadline), array_agg(r.details),
        array_agg(0::smallint)
    INTO r_call, r_account, r_ext, r_amount, r_created, r_updated, r_deadline, r_details, r_state
    FROM reservations r WHERE r.call_id = ANY (p_call[p_start:]);
    SELECT array_agg(t.call_id) INTO v_done FROM activity t
    WHERE t.call_id = ANY (SELECT w.c FROM unnest(p_op[p_start:], p_call[p_start:]) AS w(o, c) WHERE w.o = 'reserve');

    FOR k IN p_start..coalesce(array_length(p_op, 1), 0) LOOP  -- by index: a FOR over unnest(...) took 3 us a row
        o_i := k; o_fast := true; o_a := 0; o_b := 0; o_c := 0; o_tz := NULL; o_account := NULL;
        v_minute := p_now[k] / 60;
        ri := array_position(r_call, p_call[k]);
        IF p_op[k] = 'annotate' THEN
            IF ri IS NOT NULL AND r_state[ri] < 3 THEN
                r_deadline[ri] := p_deadline[k]; r_details[ri] := p_details[k];
                IF r_state[ri] = 0 THEN r_state[ri] := 1; END IF;
                o_a := 1;
            END IF;
            RETURN NEXT;
            CONTINUE;
        END IF;
        IF p_op[k] = 'reserve' THEN
            -- a call already held or settled, or an account not here, is the program's to answer
            IF ri IS NOT NULL OR p_call[k] = ANY (v_done) THEN v_stop := k; EXIT; END IF;
            v_account := p_account[k]; v_key := p_account[k] || ' ' || p_ext[k]; v_held := 0;
        ELSE
            IF ri IS NULL OR r_state[ri] >= 3 THEN
                IF p_op[k] = 'release' THEN RETURN NEXT; CONTINUE; END IF;
                v_stop := k; EXIT;
            END IF;
            v_account := r_account[ri]; v_key := v_account || ' ' || r_ext[ri]; v_held := r_amount[ri];
        END IF;
        ai := array_position(a_id, v_account);
        IF ai IS NULL THEN v_stop := k; EXIT; END IF;
        IF a_tz[ai] IS DISTINCT FROM p_tz[k] THEN
            v_stop := k; v_stop_tz := a_tz[ai]; v_stop_account := v_account; EXIT;
        END IF;
        ei := array_position(e_key, v_key);

        IF p_op[k] IN ('reserve', 'extend') THEN
            v_created := false;
            IF ei IS NULL THEN
                IF p_op[k] = 'extend' THEN v_stop := k; EXIT; END IF;
                -- the first call of this extension: its row, with the default rules
                INSERT INTO extensions (account_id, ext) VALUES (v_account, p_ext[k]) ON CONFLICT DO NOTHING;
                v_created := FOUND;
                SELECT * INTO v_row FROM extensions WHERE account_id = v_account AND ext = p_ext[k] FOR UPDATE;
                e_key := e_key || v_key; e_account := e_account || v_row.account_id; e_ext := e_ext || v_row.ext;
                e_chargeable := e_chargeable || v_row.chargeable; e_daily := e_daily || v_row.daily_cap;
                e_monthly := e_monthly || v_row.monthly_cap; e_max_calls := e_max_calls || v_row.max_calls;
                e_max_att := e_max_att || v_row.max_attempts; e_reserved := e_reserved || v_row.reserved;
                e_live := e_live || v_row.live_calls; e_att := e_att || v_row.attempts;
                e_att_min := e_att_min || v_row.attempt_minute; e_day := e_day || v_row.day;
                e_day_spent := e_day_spent || v_row.day_spent; e_month := e_month || v_row.month;
                e_month_spent := e_month_spent || v_row.month_spent; e_dirty := e_dirty || false;
                ei := array_length(e_key, 1);
            END IF;
            -- the programs' tests (`_CAPS`, `_NEW_CALL_LIMITS`, `_ACCOUNT_TAKE…`), on the rows as they now stand
            v_fits := e_chargeable[ei] = 1
                AND (e_daily[ei] IS NULL OR (CASE WHEN e_day[ei] = p_day[k] THEN e_day_spent[ei] ELSE 0 END)
                    + e_reserved[ei] + p_amount[k] <= e_daily[ei])
                AND (e_monthly[ei] IS NULL OR (CASE WHEN e_month[ei] = p_month[k] THEN e_month_spent[ei] ELSE 0 END)
                    + e_reserved[ei] + p_amount[k] <= e_monthly[ei])
                AND (p_op[k] = 'extend' OR (
                    (e_max_calls[ei] IS NULL OR e_live[ei] < e_max_calls[ei])
                    AND (e_max_att[ei] IS NULL OR e_att_min[ei] <> v_minute OR e_att[ei] < e_max_att[ei])))
                AND a_balance[ai] - a_reserved[ai] - a_floor[ai] >= p_amount[k]
                AND (p_op[k] = 'extend' OR (
                    (a_max_calls[ai] IS NULL OR a_live[ai] < a_max_calls[ai])
                    AND (a_max_att[ai] IS NULL OR a_att_min[ai] <> v_minute OR a_att[ai] < a_max_att[ai])));
            IF v_fits AND a_velocity[ai] IS NOT NULL THEN
                SELECT COALESCE(SUM(cost), 0) INTO v_spent FROM activity
                WHERE account_id = v_account AND ended_at > p_now[k] - 3600;
                v_spent := v_spent + COALESCE((SELECT SUM(w.c) FROM unnest(t_account, t_cost, t_ended) AS w(a, c, e)
                    WHERE w.a = v_account AND w.e > p_now[k] - 3600), 0);
                v_fits := v_spent + a_reserved[ai] + p_amount[k] <= a_velocity[ai];
            END IF;
            IF v_fits IS NOT TRUE THEN
                IF v_created THEN  -- handed back as it came: the row made for it goes too
                    DELETE FROM extensions WHERE account_id = v_account AND ext = p_ext[k];
                    e_key[ei] := NULL;
                END IF;
                v_stop := k; EXIT;
            END IF;
            e_reserved[ei] := e_reserved[ei] + p_amount[k];
            e_day_spent[ei] := CASE WHEN e_day[ei] = p_day[k] THEN e_day_spent[ei] ELSE 0 END; e_day[ei] := p_day[k];
            e_month_spent[ei] := CASE WHEN e_month[ei] = p_month[k] THEN e_month_spent[ei] ELSE 0 END;
            e_month[ei] := p_month[k];
            e_dirty[ei] := true;
            a_reserved[ai] := a_reserved[ai] + p_amount[k];
            a_dirty[ai] := true;
            IF p_op[k] = 'reserve' THEN
                e_live[ei] := e_live[ei] + 1;
                e_att[ei] := CASE WHEN e_att_min[ei] = v_minute THEN e_att[ei] + 1 ELSE 1 END;
                e_att_min[ei] := v_minute;
                a_live[ai] := a_live[ai] + 1;
                a_att[ai] := CASE WHEN a_att_min[ai] = v_minute THEN a_att[ai] + 1 ELSE 1 END;
                a_att_min[ai] := v_minute;
                r_call := r_call || p_call[k]; r_account := r_account || v_account; r_ext := r_ext || p_ext[k];
                r_amount := r_amount || p_amount[k]; r_created := r_created || p_now[k];
                r_updated := r_updated || p_now[k];
                r_deadline := r_deadline || p_deadline[k]; r_details := r_details || p_details[k];
                r_state := r_state || 2::smallint;
                o_a := p_amount[k];
            ELSE
                r_amount[ri] := v_held + p_amount[k]; r_updated[ri] := p_now[k];
                IF p_deadline[k] > r_deadline[ri] THEN r_deadline[ri] := p_deadline[k]; END IF;
                IF r_state[ri] = 0 THEN r_state[ri] := 1; END IF;
                o_a := v_held + p_amount[k];
            END IF;
            RETURN NEXT;
            CONTINUE;
        END IF;

        -- release (spent nothing) or settle (spent p_amount[k]): the reservation goes back.
        v_balance := a_balance[ai] - p_amount[k];
        IF p_op[k] = 'settle' AND ((v_balance < a_threshold[ai] AND a_threshold[ai] <= a_balance[ai])
            OR (a_on_low[ai] = 'topup' AND v_balance < a_threshold[ai] AND a_pending[ai] IS NULL)) THEN
            v_stop := k; EXIT;  -- a notice or an automatic top-up: the program's
        END IF;
        r_state[ri] := CASE WHEN r_state[ri] = 2 THEN 4 ELSE 3 END;
        e_reserved[ei] := e_reserved[ei] - v_held; e_live[ei] := e_live[ei] - 1;
        e_day_spent[ei] := CASE WHEN e_day[ei] = p_day[k] THEN e_day_spent[ei] ELSE 0 END + p_amount[k];
        e_day[ei] := p_day[k];
        e_month_spent[ei] := CASE WHEN e_month[ei] = p_month[k] THEN e_month_spent[ei] ELSE 0 END + p_amount[k];
        e_month[ei] := p_month[k];
        e_dirty[ei] := true;
        a_reserved[ai] := a_reserved[ai] - v_held; a_live[ai] := a_live[ai] - 1;
        a_dirty[ai] := true;
        IF p_op[k] = 'release' THEN
            o_a := 1;
            RETURN NEXT;
            CONTINUE;
        END IF;
        a_balance[ai] := v_balance;
        IF p_amount[k] > 0 THEN
            j_account := j_account || v_account; j_at := j_at || p_now[k]; j_amount := j_amount || -p_amount[k];
            j_call := j_call || p_call[k]; j_balance := j_balance || v_balance;
        END IF;
        v_ended := CASE WHEN p_ended[k] <> 0 THEN p_ended[k] ELSE p_now[k] END;
        t_call := t_call || p_call[k]; t_account := t_account || v_account; t_ext := t_ext || r_ext[ri];
        t_started := t_started || p_started[k]; t_ended := t_ended || v_ended; t_dialed := t_dialed || p_dialed[k];
        t_e164 := t_e164 || p_e164[k]; t_destination := t_destination || p_destination[k];
        t_kind := t_kind || p_kind[k];
        t_billable := t_billable || p_billable[k]; t_cost := t_cost || p_amount[k]; t_reserved := t_reserved || v_held;
        t_balance := t_balance || v_balance; t_estimated := t_estimated || p_estimated[k];
        t_overdraft := t_overdraft || CASE WHEN p_amount[k] > v_held THEN 1 ELSE 0 END;
        t_day := t_day || p_end_day[k];
        v_done := v_done || p_call[k];
        o_a := p_amount[k]; o_b := v_held; o_c := v_balance;
        RETURN NEXT;
    END LOOP;

    -- What the operations did, written once.
    UPDATE extensions x SET reserved = u.reserved, live_calls = u.live, attempts = u.att, attempt_minute = u.att_min,
        day = u.day, day_spent = u.day_spent, month = u.month, month_spent = u.month_spent
    FROM unnest(e_account, e_ext, e_reserved, e_live, e_att, e_att_min, e_day, e_day_spent, e_month, e_month_spent,
        e_dirty, e_key)
        AS u(account_id, ext, reserved, live, att, att_min, day, day_spent, month, month_spent, dirty, k)
    WHERE u.dirty AND u.k IS NOT NULL AND x.account_id = u.account_id AND x.ext = u.ext;
    UPDATE accounts y SET balance = u.balance, reserved = u.reserved, live_calls = u.live, attempts = u.att,
        attempt_minute = u.att_min
    FROM unnest(a_id, a_balance, a_reserved, a_live, a_att, a_att_min, a_dirty)
        AS u(id, balance, reserved, live, att, att_min, dirty)
    WHERE u.dirty AND y.id = u.id;
    IF r_call IS NOT NULL THEN
        DELETE FROM reservations r USING unnest(r_call, r_state) AS u(c, s) WHERE u.s = 3 AND r.call_id = u.c;
        UPDATE reservations r SET amount = u.amount, updated_at = u.updated, deadline = u.deadline, details = u.details
        FROM unnest(r_call, r_amount, r_updated, r_deadline, r_details, r_state)
            AS u(c, amount, updated, deadline, details, s)
        WHERE u.s = 1 AND r.call_id = u.c;
        INSERT INTO reservations (call_id, account_id, ext, amount, created_at, updated_at, deadline, details)
        SELECT u.c, u.a, u.e, u.amount, u.created, u.updated, u.deadline, u.details
        FROM unnest(r_call, r_account, r_ext, r_amount, r_created, r_updated, r_deadline, r_details, r_state)
            AS u(c, a, e, amount, created, updated, deadline, details, s)
        WHERE u.s = 2;
    END IF;
    IF j_call IS NOT NULL THEN
        INSERT INTO journal (account_id, at, entry, amount, reference, balance_after)
        SELECT u.a, u.t, 'debit', u.m, u.c, u.b FROM unnest(j_account, j_at, j_amount, j_call, j_balance)
            WITH ORDINALITY AS u(a, t, m, c, b, k) ORDER BY u.k;
    END IF;
    IF t_call IS NOT NULL THEN
        INSERT INTO activity (call_id, account_id, ext, started_at, ended_at, dialed, e164, destination, kind,
            billable_seconds, cost, reserved, balance_after, estimated, overdraft, day)
        SELECT * FROM unnest(t_call, t_account, t_ext, t_started, t_ended, t_dialed, t_e164, t_destination, t_kind,
            t_billable, t_cost, t_reserved, t_balance, t_estimated, t_overdraft, t_day);
    END IF;
    IF v_stop IS NOT NULL THEN  -- handed back as it came, and the function ends there
        o_i := v_stop; o_fast := false; o_a := 0; o_b := 0; o_c := 0; o_tz := v_stop_tz; o_account := v_stop_account;
        RETURN NEXT;
    END IF;
END
"""

CREATE = (
    f"CREATE OR REPLACE FUNCTION {FUNCTION}(p_start integer, "
    + ", ".join(f"p_{name} {kind}[]" for name, kind in COLUMNS)
    + ")\nRETURNS TABLE (o_i integer, o_fast boolean, o_a bigint, o_b bigint, o_c bigint, o_tz text, o_account text)"
    + "\nLANGUAGE plpgsql SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off AS $fn$"
    + _BODY
    + "$fn$"
)

FAST_PROGRAMS: dict[Callable[..., Any], str] = {
    P.reserve: "reserve",
    P.extend: "extend",
    P.release: "release",
    P.settle: "settle",
    P.annotate: "annotate",
}


class Zones:
    """What this engine knows of the accounts it rates: each one's time zone, and whose call is whose.

    Learnt from the ledger (the function says an account's zone when it was not the one given);
    a call it does not know, or an account it has not seen, simply goes the slow way once.
    """

    LIMIT = 200_000

    def __init__(self) -> None:
        self.of_account: dict[str, str] = {}
        self.account_of_call: dict[str, str] = {}

    def learn(self, account_id: str, tz: str) -> None:
        if len(self.of_account) >= self.LIMIT:
            self.of_account.clear()
        self.of_account[account_id] = tz

    def called(self, call_id: str, account_id: str) -> None:
        if len(self.account_of_call) >= self.LIMIT:
            self.account_of_call.clear()
        self.account_of_call[call_id] = account_id


def validate(op: str, args: tuple[Any, ...]) -> None:
    """The checks the program would make before its first statement, with the same errors."""
    if op == "reserve":
        P.check_amount(args[3], "a reservation")
    elif op == "extend":
        P.check_amount(args[1], "an extension of a reservation")
    elif op == "settle":
        P.check_amount(args[1], "a cost", zero=True)


def row(op: str, args: tuple[Any, ...], zones: Zones) -> tuple[Any, ...]:
    """One operation as a row of the function's arrays, in the order of COLUMNS."""
    if op == "reserve":
        call_id, account_id, ext, amount, now, deadline, details = args
        tz = zones.of_account.get(account_id)
        day, month = periods(now, tz) if tz else ("", "")
        return (op, call_id, account_id, ext, amount, now, deadline, details, tz, day, month, "", 0, 0, "", "", "", "",
                0, 0)  # fmt: skip
    call_id = args[0]
    account_id = zones.account_of_call.get(call_id)
    tz = zones.of_account.get(account_id) if account_id else None
    if op == "annotate":
        _call, deadline, details = args
        return (op, call_id, None, None, 0, 0, deadline, details, tz, "", "", "", 0, 0, "", "", "", "", 0, 0)
    if op == "release":
        now = args[1]
        day, month = periods(now, tz) if tz else ("", "")
        return (op, call_id, None, None, 0, now, 0, "", tz, day, month, "", 0, 0, "", "", "", "", 0, 0)
    if op == "extend":
        _call, amount, now, deadline = args
        day, month = periods(now, tz) if tz else ("", "")
        return (op, call_id, None, None, amount, now, deadline, "", tz, day, month, "", 0, 0, "", "", "", "", 0, 0)
    _call, cost, d, now = args
    d = d if isinstance(d, CallDetails) else CallDetails()
    day, month = periods(now, tz) if tz else ("", "")
    end_day = periods(d.ended_at or now, tz)[0] if tz else ""
    return (op, call_id, None, None, cost, now, 0, "", tz, day, month, end_day, d.started_at, d.ended_at, d.dialed,
            d.e164, d.destination, d.kind, d.billable_seconds, int(d.estimated))  # fmt: skip


def columns(rows: list[tuple[Any, ...]]) -> list[str]:
    """The function's arrays, each as PostgreSQL's array literal: asyncpg encodes an array element by
    element, asking each one whether it is itself a sequence (two ABC checks apiece), which cost the
    engine more than everything else it does for a batch; a literal is one string per column."""
    return [
        _numbers(col) if kind != "text" else _texts(col)
        for col, (_name, kind) in zip(zip(*rows, strict=True), COLUMNS, strict=True)
    ]


def _numbers(col: tuple[int, ...]) -> str:
    return "{" + ",".join(map(str, col)) + "}"


def _texts(col: tuple[str | None, ...]) -> str:
    if None not in col:
        joined = "".join(col)  # type: ignore[arg-type]
        if '"' not in joined and "\\" not in joined:
            return '{"' + '","'.join(col) + '"}'  # type: ignore[arg-type]
    return "{" + ",".join("NULL" if x is None else _quoted(x) for x in col) + "}"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def result(op: str, args: tuple[Any, ...], a: int, b: int, c: int) -> Any:
    """What the program would have returned, from the function's row for a fast operation."""
    if op in ("reserve", "extend"):
        return ReserveResult(True, None, a)
    if op in ("release", "annotate"):
        return bool(a)
    return SettleResult(True, cost=a, reserved=b, overdraft=a > b, balance_after=c)
