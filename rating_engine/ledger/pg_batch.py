"""The call path's operations on PostgreSQL, many per statement: one server-side function per batch.

A reservation and a settle take eight statements and as many round trips when run as programs,
each in its own transaction, each queuing on the account row. Here a batch of them (reserve,
extend, release, settle, annotate) is sent as arrays to `rating_engine_batch_v14`, which runs
them in order in the batch's transaction and commits once. The function only does the common
case: an operation that is a duplicate or unknown, that a velocity limit would refuse, that raises
a notice or an automatic top-up, or whose account's time zone this engine does not know yet, is
handed back untouched ("slow") and its program runs there, in a savepoint, before the function
goes on with the rest. So the rules stay in `programs.py`; the function repeats only what they
write when every check passes, and why they refuse a reservation or a renewal that a cap, a call
or attempt limit, the extension's rules or the money would not take (they write nothing then):
an account that has run out refuses every call of every extension, and each hand-back was a
program and another call of the function. The contract suite runs both against the same tests.

Checks before writes: the function first makes the rows of the extensions calling for the first
time, then locks every extension row, then every account row, the batch names, each set in key
order (the programs' own order: a new extension's row, the extension, the account), so that two
batches, of two writers or of two engines, or a batch and a program, cannot deadlock; with the rows
locked, a check that passes still holds at the write. The locks are those of an UPDATE that leaves
the keys alone (FOR NO KEY UPDATE), as the programs' own UPDATEs take: a lone operation runs as its
program beside the batches, and a first call's program makes its extension's row, whose foreign
key takes a key-share lock on the account (until schema version 8 every reservation's did, from
the program's first statement), which FOR UPDATE would wait for while holding the extension the
program wants next.
Python names each call, account and extension of the batch by a slot (`encode`); the function
reads the rows slot by slot into arrays of its own, runs the
operations on that state, finding each one's rows by index, and writes what changed once at the
end of the batch (or before it hands an operation back): one UPDATE for the accounts, one for the
extensions, one statement each for the reservations, the journal and the activity. Row by row,
PostgreSQL pays a new row version and its WAL for each UPDATE, and a hot account updated a hundred
times in one transaction makes every later UPDATE walk the versions before it. A call whose
account or extension this engine did not know (another engine reserved it, or this one restarted)
is handed back with its account and extension, and sent again in the right slots. No
subtransactions: PostgreSQL slows every session down once a transaction holds more than 64.

Every statement in it reads rows by their keys, but PL/pgSQL plans once for any batch size: a
generic plan chose to scan the whole extensions table and hash it, so the function turns off
sequential scans and hash and merge joins for itself. Those switches priced any generic plan
above a custom one, so PostgreSQL planned every statement again at every call (~100 µs each, half
of a one-operation batch's time): the function also asks for generic plans, made once.

Dates are the engine's: the day and month a cap counts in are computed here in Python, by
`periods`, for the time zone this engine read from the account; if the account's zone is not
that one, the function stops there and says it, and the operation is sent again with the right
days (a server's tzdata never decides a cap's day).
"""

from __future__ import annotations

import re
from typing import Any

from .models import CallDetails, periods

FUNCTION = "rating_engine_batch_v14"
"""Versioned by name: an engine only calls the function its own code installed."""

OPERATIONS = (  # one row per operation
    ("op", "text"),
    ("rslot", "integer"),
    ("aslot", "integer"),
    ("eslot", "integer"),
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
    ("arev", "bigint"),
    ("erev", "bigint"),
)
KEYS = (  # one row per slot: the calls, the accounts and the extensions the operations name
    ("calls", "text"),
    ("check", "boolean"),
    ("accounts", "text"),
    ("eacc", "text"),
    ("eext", "text"),
    ("eknown", "boolean"),
)
COLUMNS = OPERATIONS + KEYS
HANDED_BACK = "RE001"
"""Raised by a one-statement operation (`pg_lone`) that a row changed under it will not take: undone."""
NOTHING_WRITTEN = 0
"""The last row's `o_i` when the function, asked for the whole batch or nothing (`p_whole`), would hand an
operation back: it wrote nothing."""
CALL = (
    f"SELECT o_i, o_fast, o_a, o_b, o_c, o_tz, o_account, o_ext, o_refusal FROM {FUNCTION}($1, $2, "
    + ", ".join(f"${n}::text::{kind}[]" for n, (_name, kind) in enumerate(COLUMNS, start=3))
    + ")"
)

_BODY = """
DECLARE
    v_n integer;
    v_stop integer;
    v_stop_tz text;
    v_stop_account text;
    v_stop_ext text;
    v_held bigint;
    v_fits boolean;
    v_ext_fits boolean;
    v_refused boolean := false;  -- a reservation or a renewal refused here
    v_minute bigint;
    v_spent bigint;
    v_balance bigint;
    v_ended bigint;
    v_new integer := 0;  -- reservations to insert, update and delete at the end; rows to update
    v_changed integer := 0;
    v_gone integer := 0;
    v_dirty boolean := false;
    ai integer;
    ei integer;
    ri integer;
    -- The accounts, the extensions and the calls, by slot: each row's numbers in one array and its texts in
    -- another (`ROW_FIELDS`: a_balance[ai] here is a_n[ai][1] once the body is built); a_found, e_found: the row
    -- exists. r_state: 0 none, 1 stored, 2 stored and changed, 3 new, 4 stored and gone, 5 new and gone again;
    -- r_done: 1 if already settled (asked only for the calls a reservation names).
    a_n bigint[]; a_t text[]; a_dirty boolean[];
    e_n bigint[]; e_t text[]; e_dirty boolean[];
    r_n bigint[]; r_t text[];
    m_account text[]; m_ext text[];  -- the extensions' rows this batch made
    -- written once at the end: the journal's debits and the activity rows
    j_account text[]; j_at bigint[]; j_amount bigint[]; j_call text[]; j_balance bigint[];
    t_call text[]; t_account text[]; t_ext text[]; t_started bigint[]; t_ended bigint[]; t_dialed text[];
    t_e164 text[]; t_destination text[]; t_kind text[]; t_billable bigint[]; t_cost bigint[]; t_reserved bigint[];
    t_balance bigint[]; t_estimated integer[]; t_overdraft integer[]; t_day text[];
BEGIN
    -- The rows of the calls already held come first, as in the programs (a settle takes its reservation away
    -- before it gives the money back; a renewal takes its row before it adds to the holds): read without it, a
    -- renewal could add to the holds of a call whose row a program was taking away. A batch of reservations
    -- alone writes no reservation it finds (a call already held is its program's), so it locks none.
    IF NOT ('reserve' = ALL (p_op)) THEN
        PERFORM 1 FROM reservations r WHERE r.call_id = ANY (p_calls) ORDER BY r.call_id FOR UPDATE;
    END IF;
    -- The extensions a reservation names that have no row yet get one, with the default rules, in key order and
    -- before any lock: made later, once the account is locked, a row that another writer made meanwhile would
    -- be waited for out of order (a deadlock). A row made here that no operation used goes again at the end.
    -- The rows are looked for first: once an extension has called, the insert (a speculative insertion per row
    -- and its conflict check) was ~6% of a hot account's server time for nothing.
    -- Only for the extensions the engine has not seen a call of (p_eknown): a test of the arguments alone, so
    -- that a batch of settles, or of known extensions' calls, starts no query here. An extension seen once
    -- whose row is gone since is not made here: its reservation finds no row and goes to its program.
    IF 'reserve' = ANY (p_op) AND false = ANY (p_eknown) THEN
        IF EXISTS (SELECT 1 FROM unnest(p_op, p_eslot) WITH ORDINALITY AS o(op, s, n) WHERE o.op = 'reserve'
            AND o.n >= p_start AND NOT p_eknown[o.s] AND NOT EXISTS (SELECT 1 FROM extensions x
                WHERE x.account_id = p_eacc[o.s] AND x.ext = p_eext[o.s]))
        THEN
            WITH made AS (
                INSERT INTO extensions (account_id, ext)
                SELECT DISTINCT p_eacc[o.s], p_eext[o.s] FROM unnest(p_op, p_eslot) WITH ORDINALITY AS o(op, s, n)
                WHERE o.op = 'reserve' AND o.n >= p_start AND NOT p_eknown[o.s]
                    AND EXISTS (SELECT 1 FROM accounts y WHERE y.id = p_eacc[o.s])
                ORDER BY 1, 2
                ON CONFLICT DO NOTHING RETURNING account_id, ext)
            SELECT array_agg(m.account_id), array_agg(m.ext) INTO m_account, m_ext FROM made m;
        END IF;
    END IF;
    -- Every extension row, then every account row, this batch names: locked in key order.
    PERFORM 1 FROM extensions x WHERE (x.account_id, x.ext) IN (SELECT * FROM unnest(p_eacc, p_eext))
    ORDER BY x.account_id, x.ext FOR NO KEY UPDATE;
    PERFORM 1 FROM accounts y WHERE y.id = ANY (p_accounts) ORDER BY y.id FOR NO KEY UPDATE;
    -- Then read, slot by slot: two aggregates a table instead of one a column (each aggregate is set up
    -- afresh at every call, ~9,500 instructions apiece: 41 of them were a tenth of a batch of two).
    SELECT array_agg(@e_n@), array_agg(@e_t@) INTO e_n, e_t
    FROM (SELECT x.* FROM unnest(p_eacc, p_eext) WITH ORDINALITY AS w(a, e, k)
        LEFT JOIN extensions x ON x.account_id = w.a AND x.ext = w.e ORDER BY w.k) s;
    SELECT array_agg(@a_n@), array_agg(@a_t@) INTO a_n, a_t
    FROM (SELECT y.* FROM unnest(p_accounts) WITH ORDINALITY AS w(a, k)
        LEFT JOIN accounts y ON y.id = w.a ORDER BY w.k) s;
    SELECT array_agg(@r_n@), array_agg(@r_t@) INTO r_n, r_t
    FROM (SELECT w.c, w.chk, r.* FROM unnest(p_calls, p_check) WITH ORDINALITY AS w(c, chk, k)
        LEFT JOIN reservations r ON r.call_id = w.c ORDER BY w.k) s;
    e_dirty := array_fill(false, ARRAY[coalesce(array_length(p_eacc, 1), 0)]);
    a_dirty := array_fill(false, ARRAY[coalesce(array_length(p_accounts, 1), 0)]);

    FOR k IN p_start..coalesce(array_length(p_op, 1), 0) LOOP
        o_i := k; o_fast := true; o_a := 0; o_b := 0; o_c := 0; o_tz := NULL; o_account := NULL; o_ext := NULL;
        o_refusal := NULL;
        v_minute := p_now[k] / 60;
        ri := p_rslot[k]; ai := p_aslot[k]; ei := p_eslot[k];
        IF p_op[k] = 'annotate' THEN
            IF r_state[ri] IN (1, 2, 3) THEN
                r_deadline[ri] := p_deadline[k]; r_details[ri] := p_details[k];
                IF r_state[ri] = 1 THEN r_state[ri] := 2; v_changed := v_changed + 1; END IF;
                o_a := 1;
            END IF;
            RETURN NEXT;
            CONTINUE;
        END IF;
        IF p_op[k] = 'reserve' THEN
            -- a call already held or settled, or an account not here, is the program's to answer
            IF r_state[ri] <> 0 OR r_done[ri] = 1 OR NOT a_found[ai] THEN v_stop := k; EXIT; END IF;
            -- decided with settings that have changed since (`programs.reserve`'s expect): the program's
            IF p_arev[k] >= 0 AND (a_rev[ai] <> p_arev[k] OR coalesce(e_rev[ei], 0) <> p_erev[k]) THEN
                v_stop := k; EXIT;
            END IF;
            v_held := 0;
        ELSE
            IF r_state[ri] NOT IN (1, 2, 3) THEN
                IF p_op[k] = 'release' THEN RETURN NEXT; CONTINUE; END IF;
                v_stop := k; EXIT;
            END IF;
            IF ai IS NULL OR ei IS NULL OR p_accounts[ai] <> r_account[ri] OR p_eacc[ei] <> r_account[ri]
                OR p_eext[ei] <> r_ext[ri] OR NOT a_found[ai] THEN
                -- this engine did not know whose call it is: it is told, and sends the operation again
                v_stop := k; v_stop_account := r_account[ri]; v_stop_ext := r_ext[ri]; EXIT;
            END IF;
            v_held := r_amount[ri];
        END IF;
        IF a_tz[ai] IS DISTINCT FROM p_tz[k] THEN
            v_stop := k; v_stop_tz := a_tz[ai]; v_stop_account := p_accounts[ai]; v_stop_ext := p_eext[ei]; EXIT;
        END IF;

        IF p_op[k] IN ('reserve', 'extend') THEN
            -- no row (a reservation's was made at the start; a renewal's extension has none): the program's
            IF NOT e_found[ei] THEN v_stop := k; EXIT; END IF;
            -- the programs' tests (`_CAPS`, `_NEW_CALL_LIMITS`, `_ACCOUNT_TAKE…`), on the rows as they now stand:
            -- the extension's, then the account's, as the programs take them
            v_ext_fits := e_chargeable[ei] = 1
                AND (e_daily[ei] IS NULL OR (CASE WHEN e_day[ei] = p_day[k] THEN e_day_spent[ei] ELSE 0 END)
                    + e_reserved[ei] + p_amount[k] <= e_daily[ei])
                AND (e_monthly[ei] IS NULL OR (CASE WHEN e_month[ei] = p_month[k] THEN e_month_spent[ei] ELSE 0 END)
                    + e_reserved[ei] + p_amount[k] <= e_monthly[ei])
                AND (p_op[k] = 'extend' OR (
                    (e_max_calls[ei] IS NULL OR e_live[ei] < e_max_calls[ei])
                    AND (e_max_att[ei] IS NULL OR e_att_min[ei] <> v_minute OR e_att[ei] < e_max_att[ei])));
            v_fits := v_ext_fits
                AND a_balance[ai] - a_reserved[ai] - a_floor[ai] >= p_amount[k]
                AND (p_op[k] = 'extend' OR (
                    (a_max_calls[ai] IS NULL OR a_live[ai] < a_max_calls[ai])
                    AND (a_max_att[ai] IS NULL OR a_att_min[ai] <> v_minute OR a_att[ai] < a_max_att[ai])));
            -- Refused, and why, as the programs say it (`_extension_refusal`, `_account_refusal`), and what they
            -- leave behind: nothing held. Answered here rather than handed back: when an account has run out, every
            -- call of every extension is refused, and each hand-back stopped the batch for a program and another
            -- call of this function. Refused by the account, the programs have taken the extension first and give
            -- back its holds and a new call's attempt: its days and its attempt minute move on to now's, here as
            -- there; but a first call's row that this batch made (and no operation has used yet) the program
            -- would make and delete again: it is left as made, and goes at the end (the look in the rows made
            -- runs only then).
            IF v_fits IS FALSE AND v_ext_fits IS NOT NULL THEN
                IF v_ext_fits AND (p_eknown[ei] OR e_dirty[ei] OR m_account IS NULL
                    OR NOT EXISTS (SELECT 1 FROM unnest(m_account, m_ext) AS m(a, e)
                        WHERE m.a = p_eacc[ei] AND m.e = p_eext[ei])) THEN
                    e_day_spent[ei] := CASE WHEN e_day[ei] = p_day[k] THEN e_day_spent[ei] ELSE 0 END;
                    e_day[ei] := p_day[k];
                    e_month_spent[ei] := CASE WHEN e_month[ei] = p_month[k] THEN e_month_spent[ei] ELSE 0 END;
                    e_month[ei] := p_month[k];
                    IF p_op[k] = 'reserve' THEN  -- counted, then given back: none this minute if it was another's
                        e_att[ei] := CASE WHEN e_att_min[ei] = v_minute THEN e_att[ei] ELSE 0 END;
                        e_att_min[ei] := v_minute;
                    END IF;
                    e_dirty[ei] := true; v_dirty := true;
                END IF;
                o_refusal := CASE
                    WHEN NOT v_ext_fits THEN CASE
                        WHEN e_chargeable[ei] <> 1 THEN 'extension_not_allowed'
                        WHEN p_op[k] = 'reserve' AND e_max_calls[ei] IS NOT NULL AND e_live[ei] >= e_max_calls[ei]
                            THEN 'too_many_calls'
                        WHEN p_op[k] = 'reserve' AND e_max_att[ei] IS NOT NULL AND e_att_min[ei] = v_minute
                            AND e_att[ei] >= e_max_att[ei] THEN 'rate_limited'
                        ELSE 'cap_reached' END
                    WHEN p_op[k] = 'reserve' AND a_max_calls[ai] IS NOT NULL AND a_live[ai] >= a_max_calls[ai]
                        THEN 'too_many_calls'
                    WHEN p_op[k] = 'reserve' AND a_max_att[ai] IS NOT NULL AND a_att_min[ai] = v_minute
                        AND a_att[ai] >= a_max_att[ai] THEN 'rate_limited'
                    WHEN a_floor[ai] > 0 AND a_balance[ai] - a_reserved[ai] >= p_amount[k] THEN 'account_blocked'
                    ELSE 'insufficient_funds' END;
                v_refused := true;
                RETURN NEXT;
                CONTINUE;
            END IF;
            IF v_fits AND a_velocity[ai] IS NOT NULL THEN
                SELECT COALESCE(SUM(cost), 0) INTO v_spent FROM activity
                WHERE account_id = p_accounts[ai] AND ended_at > p_now[k] - 3600;
                v_spent := v_spent + COALESCE((SELECT SUM(w.c) FROM unnest(t_account, t_cost, t_ended) AS w(a, c, e)
                    WHERE w.a = p_accounts[ai] AND w.e > p_now[k] - 3600), 0);
                v_fits := v_spent + a_reserved[ai] + p_amount[k] <= a_velocity[ai];
            END IF;
            IF v_fits IS NOT TRUE THEN v_stop := k; EXIT; END IF;
            e_reserved[ei] := e_reserved[ei] + p_amount[k];
            e_day_spent[ei] := CASE WHEN e_day[ei] = p_day[k] THEN e_day_spent[ei] ELSE 0 END; e_day[ei] := p_day[k];
            e_month_spent[ei] := CASE WHEN e_month[ei] = p_month[k] THEN e_month_spent[ei] ELSE 0 END;
            e_month[ei] := p_month[k];
            e_dirty[ei] := true;
            a_reserved[ai] := a_reserved[ai] + p_amount[k];
            a_dirty[ai] := true; v_dirty := true;
            IF p_op[k] = 'reserve' THEN
                e_live[ei] := e_live[ei] + 1;
                e_att[ei] := CASE WHEN e_att_min[ei] = v_minute THEN e_att[ei] + 1 ELSE 1 END;
                e_att_min[ei] := v_minute;
                a_live[ai] := a_live[ai] + 1;
                a_att[ai] := CASE WHEN a_att_min[ai] = v_minute THEN a_att[ai] + 1 ELSE 1 END;
                a_att_min[ai] := v_minute;
                r_state[ri] := 3; v_new := v_new + 1; r_account[ri] := p_accounts[ai]; r_ext[ri] := p_eext[ei];
                r_amount[ri] := p_amount[k]; r_created[ri] := p_now[k]; r_updated[ri] := p_now[k];
                r_deadline[ri] := p_deadline[k]; r_details[ri] := p_details[k];
                o_a := p_amount[k];
            ELSE
                r_amount[ri] := v_held + p_amount[k]; r_updated[ri] := p_now[k];
                IF p_deadline[k] > r_deadline[ri] THEN r_deadline[ri] := p_deadline[k]; END IF;
                IF r_state[ri] = 1 THEN r_state[ri] := 2; v_changed := v_changed + 1; END IF;
                o_a := v_held + p_amount[k];
            END IF;
            RETURN NEXT;
            CONTINUE;
        END IF;

        -- release (spent nothing) or settle (spent p_amount[k]): the reservation goes back.
        IF NOT e_found[ei] THEN v_stop := k; EXIT; END IF;
        v_balance := a_balance[ai] - p_amount[k];
        IF p_op[k] = 'settle' AND ((v_balance < a_threshold[ai] AND a_threshold[ai] <= a_balance[ai])
            OR (a_on_low[ai] = 'topup' AND v_balance < a_threshold[ai] AND a_pending[ai] IS NULL)) THEN
            v_stop := k; EXIT;  -- a notice or an automatic top-up: the program's
        END IF;
        IF r_state[ri] = 3 THEN
            r_state[ri] := 5; v_new := v_new - 1;
        ELSE
            IF r_state[ri] = 2 THEN v_changed := v_changed - 1; END IF;
            r_state[ri] := 4; v_gone := v_gone + 1;
        END IF;
        e_reserved[ei] := e_reserved[ei] - v_held; e_live[ei] := e_live[ei] - 1;
        e_day_spent[ei] := CASE WHEN e_day[ei] = p_day[k] THEN e_day_spent[ei] ELSE 0 END + p_amount[k];
        e_day[ei] := p_day[k];
        e_month_spent[ei] := CASE WHEN e_month[ei] = p_month[k] THEN e_month_spent[ei] ELSE 0 END + p_amount[k];
        e_month[ei] := p_month[k];
        e_dirty[ei] := true;
        a_reserved[ai] := a_reserved[ai] - v_held; a_live[ai] := a_live[ai] - 1;
        a_dirty[ai] := true; v_dirty := true;
        IF p_op[k] = 'release' THEN
            o_a := 1;
            RETURN NEXT;
            CONTINUE;
        END IF;
        a_balance[ai] := v_balance;
        r_done[ri] := 1;
        IF p_amount[k] > 0 THEN
            j_account := j_account || p_accounts[ai]; j_at := j_at || p_now[k]; j_amount := j_amount || -p_amount[k];
            j_call := j_call || p_calls[ri]; j_balance := j_balance || v_balance;
        END IF;
        v_ended := CASE WHEN p_ended[k] <> 0 THEN p_ended[k] ELSE p_now[k] END;
        t_call := t_call || p_calls[ri]; t_account := t_account || p_accounts[ai]; t_ext := t_ext || p_eext[ei];
        t_started := t_started || p_started[k]; t_ended := t_ended || v_ended; t_dialed := t_dialed || p_dialed[k];
        t_e164 := t_e164 || p_e164[k]; t_destination := t_destination || p_destination[k];
        t_kind := t_kind || p_kind[k];
        t_billable := t_billable || p_billable[k]; t_cost := t_cost || p_amount[k]; t_reserved := t_reserved || v_held;
        t_balance := t_balance || v_balance; t_estimated := t_estimated || p_estimated[k];
        t_overdraft := t_overdraft || CASE WHEN p_amount[k] > v_held THEN 1 ELSE 0 END;
        t_day := t_day || p_end_day[k];
        o_a := p_amount[k]; o_b := v_held; o_c := v_balance;
        RETURN NEXT;
    END LOOP;

    IF v_stop IS NOT NULL AND p_whole THEN
        -- All or nothing was asked, and an operation is handed back: nothing is written (the rows made at the
        -- start go again), and a last row with o_i 0 says so; the driver sends the batch again in a transaction
        -- of its own. Not an error: PostgreSQL would log each one with its statement, at every refused call.
        IF m_account IS NOT NULL THEN
            DELETE FROM extensions x USING unnest(m_account, m_ext) AS m(a, e)
            WHERE x.account_id = m.a AND x.ext = m.e;
        END IF;
        o_i := 0; o_fast := false; o_a := 0; o_b := 0; o_c := 0; o_tz := NULL; o_account := NULL; o_ext := NULL;
        o_refusal := NULL;
        RETURN NEXT;
        RETURN;
    END IF;
    -- A row made at the start for a reservation that did not happen here (refused, handed back, or not reached
    -- after one was) goes: the program that is handed it finds the extension as it was, and a refused first
    -- call leaves no row. Every reservation that is held writes its extension's row, so with none refused or
    -- handed back there is none to look for (matching the rows made to their slots at the start cost 4% of a
    -- batch of first calls).
    IF (v_stop IS NOT NULL OR v_refused) AND m_account IS NOT NULL THEN
        DELETE FROM extensions x
        USING unnest(m_account, m_ext) AS m(a, e), unnest(p_eacc, p_eext, e_dirty) AS u(a, e, dirty)
        WHERE m.a = u.a AND m.e = u.e AND NOT u.dirty AND x.account_id = m.a AND x.ext = m.e;
    END IF;
    -- What the operations did, written once; a row that is not as it was read undoes the batch (it is
    -- sent again), which the locks taken first make impossible but which must never be written over. Each
    -- statement walks the slots' numbers and reads its arrays by subscript: `unnest` of sixteen arrays is
    -- sixteen set-returning functions, each copied into a tuplestore element by element (5-6% of the server's
    -- instructions a pair). The reads above keep `unnest`: by subscript, their joins cost more than it saves.
    -- (One statement of data-modifying CTEs instead counted 10% more on a batch of two: each part is started
    -- and its rows kept even where there is nothing to write.)
    IF v_dirty THEN  -- every operation that wrote changed both an extension and an account
        UPDATE extensions x SET reserved = e_reserved[u.i], live_calls = e_live[u.i], attempts = e_att[u.i],
            attempt_minute = e_att_min[u.i], day = e_day[u.i], day_spent = e_day_spent[u.i], month = e_month[u.i],
            month_spent = e_month_spent[u.i]
        FROM generate_subscripts(e_dirty, 1) AS u(i)
        WHERE e_dirty[u.i] AND e_found[u.i] AND x.account_id = p_eacc[u.i] AND x.ext = p_eext[u.i];
        UPDATE accounts y SET balance = a_balance[u.i], reserved = a_reserved[u.i], live_calls = a_live[u.i],
            attempts = a_att[u.i], attempt_minute = a_att_min[u.i]
        FROM generate_subscripts(a_dirty, 1) AS u(i)
        WHERE a_dirty[u.i] AND y.id = p_accounts[u.i];
    END IF;
    IF v_gone > 0 THEN
        DELETE FROM reservations r USING generate_subscripts(r_n, 1) AS u(i)
        WHERE r_state[u.i] = 4 AND r.call_id = p_calls[u.i];
        GET DIAGNOSTICS v_n = ROW_COUNT;
        IF v_n <> v_gone THEN
            RAISE EXCEPTION 'a reservation of the batch changed under it' USING ERRCODE = 'serialization_failure';
        END IF;
    END IF;
    IF v_changed > 0 THEN
        UPDATE reservations r
        SET amount = r_amount[u.i], updated_at = r_updated[u.i], deadline = r_deadline[u.i], details = r_details[u.i]
        FROM generate_subscripts(r_n, 1) AS u(i)
        WHERE r_state[u.i] = 2 AND r.call_id = p_calls[u.i];
        GET DIAGNOSTICS v_n = ROW_COUNT;
        IF v_n <> v_changed THEN
            RAISE EXCEPTION 'a reservation of the batch changed under it' USING ERRCODE = 'serialization_failure';
        END IF;
    END IF;
    IF v_new > 0 THEN
        INSERT INTO reservations (call_id, account_id, ext, amount, created_at, updated_at, deadline, details)
        SELECT p_calls[u.i], r_account[u.i], r_ext[u.i], r_amount[u.i], r_created[u.i], r_updated[u.i],
            r_deadline[u.i], r_details[u.i]
        FROM generate_subscripts(r_n, 1) AS u(i)
        WHERE r_state[u.i] = 3;
    END IF;
    IF j_call IS NOT NULL THEN
        INSERT INTO journal (account_id, at, entry, amount, reference, balance_after)
        SELECT j_account[u.i], j_at[u.i], 'debit', j_amount[u.i], j_call[u.i], j_balance[u.i]
        FROM generate_subscripts(j_call, 1) AS u(i) ORDER BY u.i;
    END IF;
    IF t_call IS NOT NULL THEN
        INSERT INTO activity (call_id, account_id, ext, started_at, ended_at, dialed, e164, destination, kind,
            billable_seconds, cost, reserved, balance_after, estimated, overdraft, day)
        SELECT t_call[u.i], t_account[u.i], t_ext[u.i], t_started[u.i], t_ended[u.i], t_dialed[u.i], t_e164[u.i],
            t_destination[u.i], t_kind[u.i], t_billable[u.i], t_cost[u.i], t_reserved[u.i], t_balance[u.i],
            t_estimated[u.i], t_overdraft[u.i], t_day[u.i]
        FROM generate_subscripts(t_call, 1) AS u(i);
    END IF;
    IF v_stop IS NOT NULL THEN  -- handed back as it came, and the function ends there
        o_i := v_stop; o_fast := false; o_a := 0; o_b := 0; o_c := 0;
        o_tz := v_stop_tz; o_account := v_stop_account; o_ext := v_stop_ext; o_refusal := NULL;
        RETURN NEXT;
    END IF;
END
"""

ROW_FIELDS = {  # per table's slot arrays: (name in the body, column read) for its numbers, then its texts;
    # a "column" with a space in it is an expression of the read's row `s`
    "a": (
        (("balance", "balance"), ("reserved", "reserved"), ("floor", "floor"), ("threshold", "threshold"),
         ("velocity", "velocity_limit"), ("max_calls", "max_calls"), ("max_att", "max_attempts"),
         ("live", "live_calls"), ("att", "attempts"), ("att_min", "attempt_minute"), ("rev", "settings_rev")),
        (("tz", "timezone"), ("on_low", "on_low"), ("pending", "topup_pending")),
    ),
    "e": (
        (("chargeable", "chargeable"), ("daily", "daily_cap"), ("monthly", "monthly_cap"), ("max_calls", "max_calls"),
         ("max_att", "max_attempts"), ("reserved", "reserved"), ("live", "live_calls"), ("att", "attempts"),
         ("att_min", "attempt_minute"), ("day_spent", "day_spent"), ("month_spent", "month_spent"),
         ("rev", "settings_rev")),
        (("day", "day"), ("month", "month")),
    ),
    "r": (
        (("amount", "amount"), ("created", "created_at"), ("updated", "updated_at"), ("deadline", "deadline"),
         ("state", "CASE WHEN s.call_id IS NULL THEN 0 ELSE 1 END"),
         ("done", "CASE WHEN s.chk AND EXISTS (SELECT 1 FROM activity t WHERE t.call_id = s.c) THEN 1 ELSE 0 END")),
        (("account", "account_id"), ("ext", "ext"), ("details", "details")),
    ),
}  # fmt: skip
FOUND = {"a": "balance", "e": "chargeable"}
"""A column that is never NULL: NULL in the slot when the row is not there."""


def _built(body: str) -> str:
    """The body as PostgreSQL runs it: `e_reserved[ei]` becomes `e_n[ei][6]`, `e_day[ei]` becomes
    `e_t[ei][1]`, `e_found[ei]` a test of a column that is never NULL (false, not NULL, for a slot
    that is NULL: the body tests it only once the slot is known), and each read's `@e_n@` the row's
    numbers as one array (`ROW_FIELDS`). Written by name, run by place."""
    for table, (numbers, texts) in ROW_FIELDS.items():
        for kind, fields, cast in (("n", numbers, "::bigint[]"), ("t", texts, "::text[]")):
            columns = ", ".join(column if " " in column else f"s.{column}" for _name, column in fields)
            body = body.replace(f"@{table}_{kind}@", f"ARRAY[{columns}]{cast}")
            for place, (name, _column) in enumerate(fields, start=1):
                body = re.sub(rf"\b{table}_{name}\[([a-z_.]+)\]", rf"{table}_{kind}[\1][{place}]", body)
    for table, column in FOUND.items():
        place = [name for name, _ in ROW_FIELDS[table][0]].index(column) + 1
        body = re.sub(rf"\b{table}_found\[([a-z_.]+)\]", rf"({table}_n[\1][{place}] IS NOT NULL)", body)
    return body


CREATE = (
    f"CREATE OR REPLACE FUNCTION {FUNCTION}(p_start integer, p_whole boolean, "
    + ", ".join(f"p_{name} {kind}[]" for name, kind in COLUMNS)
    + ")\nRETURNS TABLE (o_i integer, o_fast boolean, o_a bigint, o_b bigint, o_c bigint, o_tz text, o_account text,"
    + " o_ext text, o_refusal text)"
    + "\nLANGUAGE plpgsql SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off"
    + " SET plan_cache_mode = force_generic_plan"
    + " AS $fn$"
    + _built(_BODY)
    + "$fn$"
)


class Zones:
    """What this engine knows of the accounts it rates: each one's time zone, whose call is whose
    (its account and extension, the slots it is sent in), and which extensions have a row.

    Learnt from the ledger (the function says an account's zone, or a call's account, when it was
    not the one given); a call it does not know, or an account it has not seen, costs one more try.
    """

    LIMIT = 200_000

    def __init__(self) -> None:
        self.of_account: dict[str, str] = {}
        self.of_call: dict[str, tuple[str, str]] = {}
        self.with_rows: set[tuple[str, str]] = set()
        """Extensions known to have a row: the function does not look for their rows to make them."""
        self.with_velocity: set[str] = set()
        """Accounts with a velocity limit, whose lone reservations and renewals go to their program:
        the one statement (`pg_lone`) cannot sum their spending and would hand them back."""

    def learn(self, account_id: str, tz: str, velocity: bool | None = None) -> None:
        """An account's zone, and (None: not said) whether it has a velocity limit."""
        if len(self.of_account) >= self.LIMIT:
            self.of_account.clear()
            self.with_velocity.clear()
        self.of_account[account_id] = tz
        if velocity:
            self.with_velocity.add(account_id)
        elif velocity is not None:
            self.with_velocity.discard(account_id)

    def called(self, call_id: str, account_id: str, ext: str) -> None:
        """A call held (by this engine, or by another, as the function said): its extension has a row."""
        if len(self.of_call) >= self.LIMIT:
            self.of_call.clear()
        self.of_call[call_id] = (account_id, ext)
        self.has_row(account_id, ext)

    def has_row(self, account_id: str, ext: str) -> None:
        if len(self.with_rows) >= self.LIMIT:
            self.with_rows.clear()
        self.with_rows.add((account_id, ext))


def _whose(op: str, args: tuple[Any, ...], named: dict[str, tuple[str, str]], zones: Zones) -> tuple[str, str] | None:
    """An operation's account and extension, as the batch tells them: a reservation names them (and
    `named` keeps them for the call's later operations in the batch), else the call is known or not.
    A call this engine already knows is its account's, whatever a duplicate reservation of it in the
    batch names: taken at its word, that one put the call's renewal in the duplicate's group, beside
    (not before) a reservation of the call's own account, and changed which of the two was refused."""
    if op == "reserve":
        named[args[0]] = (args[1], args[2])
        return named[args[0]]
    return zones.of_call.get(args[0]) or named.get(args[0])


def split(ops: list[tuple[str, tuple[Any, ...]]], zones: Zones, parts: int) -> list[list[int]]:
    """A batch's operations (their indexes, in order) in at most `parts` groups that name no account
    and no call in common: each group can run in a transaction of its own, side by side with the
    others, without waiting for their locks or writing the same reservation. An operation goes with
    its call and its account (reserved earlier in the batch, or known to `zones`); those whose account
    is unknown all go in the first group, which alone may then wait on another's locks. The sets of
    linked operations are dealt largest first, each to the group with the fewest operations so far."""
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def root(key: tuple[str, str]) -> tuple[str, str]:
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    named: dict[str, tuple[str, str]] = {}
    keys: list[tuple[str, str]] = []
    for op, args in ops:
        whose = _whose(op, args, named, zones)
        call, owner = root(("call", args[0])), root(("account", whose[0] if whose else ""))
        if call != owner:
            parent[call] = owner
        keys.append(("call", args[0]))
    sets = [root(key) for key in keys]
    sizes: dict[tuple[str, str], int] = {}
    for r in sets:
        sizes[r] = sizes.get(r, 0) + 1
    loads = [0] * parts
    group_of: dict[tuple[str, str], int] = {}
    unknown = ("account", "")
    if unknown in parent:
        group_of[root(unknown)] = 0
        loads[0] = sizes.pop(root(unknown))
    for r, n in sorted(sizes.items(), key=lambda item: -item[1]):
        g = group_of[r] = loads.index(min(loads))
        loads[g] += n
    groups: list[list[int]] = [[] for _ in range(parts)]
    for k, r in enumerate(sets):
        groups[group_of[r]].append(k)
    return [g for g in groups if g]


def encode(ops: list[tuple[str, tuple[Any, ...]]], zones: Zones) -> list[str]:
    """A batch as the function's arguments (after `p_start` and `p_whole`): one row per operation,
    naming its call, account and extension by slot, then the slots' keys. Python picks the slots, so
    the function finds each row's state by index instead of searching its arrays (2.7 µs a search)."""
    calls: dict[str, int] = {}
    check: list[bool] = []
    accounts: dict[str, int] = {}
    extensions: dict[tuple[str, str], int] = {}
    named: dict[str, tuple[str, str]] = {}  # calls reserved earlier in this batch
    rows = []
    whose: tuple[str, str] | None
    for op, args in ops:
        call_id = args[0]
        rslot = calls.setdefault(call_id, len(calls) + 1)
        if rslot > len(check):
            check.append(False)
        if op == "reserve":
            check[rslot - 1] = True
        whose = _whose(op, args, named, zones)
        aslot: int | None = None
        eslot: int | None = None
        tz: str | None = None
        if whose is not None:
            account_id, ext = whose
            aslot = accounts.setdefault(account_id, len(accounts) + 1)
            eslot = extensions.setdefault((account_id, ext), len(extensions) + 1)
            tz = zones.of_account.get(account_id)
        rows.append((op, rslot, aslot, eslot, *_values(op, args, tz)))
    keys = (
        list(calls),
        check,
        list(accounts),
        [a for a, _ in extensions],
        [e for _, e in extensions],
        [key in zones.with_rows for key in extensions],
    )
    return [
        *(_column(col, kind) for col, (_name, kind) in zip(zip(*rows, strict=True), OPERATIONS, strict=True)),
        *(_column(col, kind) for col, (_name, kind) in zip(keys, KEYS, strict=True)),
    ]


NO_REVS = (-1, -1)
"""An operation that asks for no settings revisions (`programs.reserve`'s expect)."""


def _values(op: str, args: tuple[Any, ...], tz: str | None) -> tuple[Any, ...]:
    """An operation's own values, in the order of OPERATIONS after the slots."""
    if op == "reserve":
        _call, _account, _ext, amount, now, deadline, details, expect = args
        day, month = periods(now, tz) if tz else ("", "")
        return (amount, now, deadline, details, tz, day, month, "", 0, 0, "", "", "", "", 0, 0, *(expect or NO_REVS))
    if op == "annotate":
        _call, deadline, details = args
        return (0, 0, deadline, details, tz, "", "", "", 0, 0, "", "", "", "", 0, 0, *NO_REVS)
    if op == "release":
        now = args[1]
        day, month = periods(now, tz) if tz else ("", "")
        return (0, now, 0, "", tz, day, month, "", 0, 0, "", "", "", "", 0, 0, *NO_REVS)
    if op == "extend":
        _call, amount, now, deadline = args
        day, month = periods(now, tz) if tz else ("", "")
        return (amount, now, deadline, "", tz, day, month, "", 0, 0, "", "", "", "", 0, 0, *NO_REVS)
    _call, cost, d, now = args
    d = d if isinstance(d, CallDetails) else CallDetails()
    day, month = periods(now, tz) if tz else ("", "")
    end_day = periods(d.ended_at or now, tz)[0] if tz else ""
    return (cost, now, 0, "", tz, day, month, end_day, d.started_at, d.ended_at, d.dialed, d.e164, d.destination,
            d.kind, d.billable_seconds, int(d.estimated), *NO_REVS)  # fmt: skip


def _column(col: Any, kind: str) -> str:
    """One column as PostgreSQL's array literal: asyncpg encodes an array element by element, asking
    each one whether it is itself a sequence (two ABC checks apiece), which cost the engine more than
    everything else it does for a batch; a literal is one string per column."""
    if kind == "text":
        return _texts(col)
    if kind == "boolean":
        return "{" + ",".join("t" if x else "f" for x in col) + "}"
    return _numbers(col)


def _numbers(col: tuple[int | None, ...]) -> str:
    if None in col:
        return "{" + ",".join("NULL" if x is None else str(x) for x in col) + "}"
    return "{" + ",".join(map(str, col)) + "}"


def _texts(col: tuple[str | None, ...]) -> str:
    if not col:
        return "{}"
    if None not in col:
        joined = "".join(col)  # type: ignore[arg-type]
        if '"' not in joined and "\\" not in joined:
            return '{"' + '","'.join(col) + '"}'  # type: ignore[arg-type]
    return "{" + ",".join("NULL" if x is None else _quoted(x) for x in col) + "}"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
