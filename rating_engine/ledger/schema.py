"""Versioned schema migrations, one list per dialect, applied in order on open.

The journal is append-only: every change of a balance is one row, so a balance can always
be proved equal to the sum of its entries (`ledger check`).
"""

from __future__ import annotations

_TABLES = """
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    plan TEXT NOT NULL,
    currency TEXT NOT NULL,
    balance BIGINT NOT NULL DEFAULT 0,
    reserved BIGINT NOT NULL DEFAULT 0,
    threshold BIGINT NOT NULL DEFAULT 0,
    on_low TEXT NOT NULL DEFAULT 'block',
    topup_amount BIGINT NOT NULL DEFAULT 0,
    block_on_topup_failure INTEGER NOT NULL DEFAULT 1,
    topup_failed INTEGER NOT NULL DEFAULT 0,
    topup_pending TEXT,
    floor BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);
CREATE TABLE extensions (
    account_id TEXT NOT NULL REFERENCES accounts(id),
    ext TEXT NOT NULL,
    chargeable INTEGER NOT NULL DEFAULT 1,
    classes TEXT,
    daily_cap BIGINT,
    monthly_cap BIGINT,
    reserved BIGINT NOT NULL DEFAULT 0,
    day TEXT NOT NULL DEFAULT '',
    day_spent BIGINT NOT NULL DEFAULT 0,
    month TEXT NOT NULL DEFAULT '',
    month_spent BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, ext)
);
CREATE TABLE reservations (
    call_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    ext TEXT NOT NULL,
    amount BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deadline BIGINT NOT NULL DEFAULT 0,
    details TEXT NOT NULL DEFAULT ''
);
CREATE TABLE activity (
    call_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    ext TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at BIGINT NOT NULL,
    dialed TEXT NOT NULL,
    e164 TEXT NOT NULL,
    destination TEXT NOT NULL,
    kind TEXT NOT NULL,
    billable_seconds BIGINT NOT NULL,
    cost BIGINT NOT NULL,
    reserved BIGINT NOT NULL,
    balance_after BIGINT NOT NULL,
    estimated INTEGER NOT NULL DEFAULT 0,
    overdraft INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX activity_account_time ON activity (account_id, ended_at);
CREATE TABLE topups (
    reference TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    amount BIGINT NOT NULL,
    at BIGINT NOT NULL,
    source TEXT NOT NULL,
    status TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
"""

_JOURNAL = {
    "sqlite": "CREATE TABLE journal (id INTEGER PRIMARY KEY AUTOINCREMENT,",
    "postgres": "CREATE TABLE journal (id BIGSERIAL PRIMARY KEY,",
}

_JOURNAL_REST = """
    account_id TEXT NOT NULL REFERENCES accounts(id),
    at BIGINT NOT NULL,
    entry TEXT NOT NULL,
    amount BIGINT NOT NULL,
    reference TEXT NOT NULL,
    balance_after BIGINT NOT NULL
);
"""


# Version 2: fraud limits (concurrent calls, attempts per minute, velocity, prefixes, office hours),
# the account's time zone, and an audit list. Live-call counters start from the live reservations.
_LIMITS = """
ALTER TABLE accounts ADD COLUMN timezone TEXT NOT NULL DEFAULT 'UTC';
ALTER TABLE accounts ADD COLUMN max_calls INTEGER;
ALTER TABLE accounts ADD COLUMN max_attempts INTEGER;
ALTER TABLE accounts ADD COLUMN velocity_limit BIGINT;
ALTER TABLE accounts ADD COLUMN blocked_prefixes TEXT NOT NULL DEFAULT '';
ALTER TABLE accounts ADD COLUMN office_hours TEXT NOT NULL DEFAULT '';
ALTER TABLE accounts ADD COLUMN live_calls INTEGER NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN attempt_minute BIGINT NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN velocity_alert_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE extensions ADD COLUMN max_calls INTEGER;
ALTER TABLE extensions ADD COLUMN max_attempts INTEGER;
ALTER TABLE extensions ADD COLUMN live_calls INTEGER NOT NULL DEFAULT 0;
ALTER TABLE extensions ADD COLUMN attempt_minute BIGINT NOT NULL DEFAULT 0;
ALTER TABLE extensions ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
UPDATE accounts SET live_calls = (SELECT COUNT(*) FROM reservations r WHERE r.account_id = accounts.id);
UPDATE extensions SET live_calls =
    (SELECT COUNT(*) FROM reservations r WHERE r.account_id = extensions.account_id AND r.ext = extensions.ext);
"""

_AUDIT = {
    "sqlite": "CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT,",
    "postgres": "CREATE TABLE audit (id BIGSERIAL PRIMARY KEY,",
}

_AUDIT_REST = """
    account_id TEXT NOT NULL REFERENCES accounts(id),
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_account_time ON audit (account_id, at);
"""


# Version 4: the people who log in to the Prepaid Account page. An account's administrators have
# its id; an operator (every account) has none. Only a password hash is kept (argon2id).
_USERS = """
CREATE TABLE users (
    username TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    account_id TEXT REFERENCES accounts(id),
    language TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL
);
CREATE INDEX users_account ON users (account_id);
ALTER TABLE extensions ADD COLUMN name TEXT NOT NULL DEFAULT '';
DROP INDEX activity_account_time;
CREATE INDEX activity_account_end_call ON activity (account_id, ended_at, call_id);
"""


# Also version 4: each account's calls summed per day of its own calendar and per extension, kept by
# every settle (the page's totals and its chart read these, not a million activity rows). Calls
# settled before version 4 are summed by their UTC day.
_ACTIVITY_DAYS_TABLE = """
ALTER TABLE activity ADD COLUMN day TEXT NOT NULL DEFAULT '';
CREATE TABLE activity_days (
    account_id TEXT NOT NULL REFERENCES accounts(id),
    day TEXT NOT NULL,
    ext TEXT NOT NULL,
    calls BIGINT NOT NULL DEFAULT 0,
    seconds BIGINT NOT NULL DEFAULT 0,
    cost BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, day, ext)
);
"""
_ADD_TO_DAY = (
    "INSERT INTO activity_days (account_id, day, ext, calls, seconds, cost)"
    " VALUES (NEW.account_id, NEW.day, NEW.ext, 1, NEW.billable_seconds, NEW.cost)"
    " ON CONFLICT (account_id, day, ext) DO UPDATE SET calls = activity_days.calls + 1,"
    " seconds = activity_days.seconds + excluded.seconds, cost = activity_days.cost + excluded.cost;"
)
_SUM_DAYS = (
    "INSERT INTO activity_days (account_id, day, ext, calls, seconds, cost)"
    " SELECT account_id, day, ext, COUNT(*), SUM(billable_seconds), SUM(cost) FROM activity GROUP BY 1, 2, 3;"
)
_ACTIVITY_DAYS = {
    "sqlite": _ACTIVITY_DAYS_TABLE
    + "UPDATE activity SET day = date(ended_at, 'unixepoch');"
    + _SUM_DAYS
    + f"CREATE TRIGGER activity_days_sum AFTER INSERT ON activity BEGIN {_ADD_TO_DAY} END;",
    "postgres": _ACTIVITY_DAYS_TABLE
    + "UPDATE activity SET day = to_char(to_timestamp(ended_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD');"
    + _SUM_DAYS
    + f"CREATE FUNCTION activity_days_sum() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {_ADD_TO_DAY}"
    " RETURN NULL; END $$;"
    "CREATE TRIGGER activity_days_sum AFTER INSERT ON activity FOR EACH ROW EXECUTE FUNCTION activity_days_sum();",
}


# Version 5: card payments. An account's card on file as its payment provider reports it (its
# customer and payment-method ids, brand, last four digits, expiry: never a card number); the
# provider's webhook events already handled (a replayed event changes nothing); a top-up awaiting
# the customer (3-D Secure) keeps the provider's page to confirm it. Automatic top-ups count their
# consecutive failures and pause after three, until the administrator acts.
_CARDS = """
CREATE TABLE cards (
    account_id TEXT PRIMARY KEY REFERENCES accounts(id),
    provider TEXT NOT NULL,
    customer TEXT NOT NULL,
    payment_method TEXT NOT NULL DEFAULT '',
    brand TEXT NOT NULL DEFAULT '',
    last4 TEXT NOT NULL DEFAULT '',
    exp_month INTEGER NOT NULL DEFAULT 0,
    exp_year INTEGER NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX cards_customer ON cards (provider, customer);
CREATE TABLE webhook_events (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
ALTER TABLE topups ADD COLUMN action_url TEXT NOT NULL DEFAULT '';
ALTER TABLE accounts ADD COLUMN auto_topups_per_day INTEGER NOT NULL DEFAULT 2;
ALTER TABLE accounts ADD COLUMN topup_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN topup_paused INTEGER NOT NULL DEFAULT 0;
CREATE INDEX topups_account_time ON topups (account_id, at);
ALTER TABLE users ADD COLUMN email TEXT NOT NULL DEFAULT '';
"""
_NOTICES = {
    "sqlite": "CREATE TABLE notices (id INTEGER PRIMARY KEY AUTOINCREMENT,",
    "postgres": "CREATE TABLE notices (id BIGSERIAL PRIMARY KEY,",
}
_NOTICES_REST = """
    account_id TEXT NOT NULL REFERENCES accounts(id),
    kind TEXT NOT NULL,
    key TEXT NOT NULL UNIQUE,
    detail TEXT NOT NULL DEFAULT '',
    url TEXT NOT NULL DEFAULT '',
    amount BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    next_at BIGINT NOT NULL,
    claimed_until BIGINT NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    sent_at BIGINT
);
CREATE INDEX notices_due ON notices (sent_at, next_at);
"""


# Version 6 (PostgreSQL): the daily sums are kept once per INSERT into activity, not once per row:
# the call path's batch writes its calls' activity in one statement, and one upsert per account,
# day and extension follows it. SQLite's trigger stays per row (it has no transition tables).
_DAYS_PER_STATEMENT = (
    "DROP TRIGGER activity_days_sum ON activity;"
    "DROP FUNCTION activity_days_sum();"
    "CREATE FUNCTION activity_days_sum() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
    " INSERT INTO activity_days (account_id, day, ext, calls, seconds, cost)"
    " SELECT account_id, day, ext, COUNT(*), SUM(billable_seconds), SUM(cost) FROM added GROUP BY 1, 2, 3"
    " ON CONFLICT (account_id, day, ext) DO UPDATE SET calls = activity_days.calls + excluded.calls,"
    " seconds = activity_days.seconds + excluded.seconds, cost = activity_days.cost + excluded.cost;"
    " RETURN NULL; END $$;"
    "CREATE TRIGGER activity_days_sum AFTER INSERT ON activity REFERENCING NEW TABLE AS added"
    " FOR EACH STATEMENT EXECUTE FUNCTION activity_days_sum();"
)

# Version 7: a number that every change of an account's or an extension's settings raises. An
# engine decides a call with the settings it read last time, and reserves only if they are still
# those (one trip to the ledger per authorization instead of two; see `programs.reserve`).
_SETTINGS_REV = (
    "ALTER TABLE accounts ADD COLUMN settings_rev BIGINT NOT NULL DEFAULT 0;"
    "ALTER TABLE extensions ADD COLUMN settings_rev BIGINT NOT NULL DEFAULT 0;"
)

# Version 8 (PostgreSQL): the tables every call writes (its reservation, its journal debit, its
# activity row and its day's sum) name their account without a foreign key. Each of their rows cost
# PostgreSQL a trigger that looked the account up again and share-locked it: four per call, 15-20%
# of the server's time on 1,000 accounts. Every writer already finds the account, and holds its row,
# in the same transaction, so what the keys guarded is kept otherwise: an account is never deleted,
# emptied or renamed (a trigger refuses it, as the keys did), and `ledger check` names any row whose
# account is missing. The other tables (extensions, top-ups, users, cards, notices, audit) keep theirs.
CALL_TABLES = ("reservations", "journal", "activity", "activity_days")
_ACCOUNTS_STAY = (
    "CREATE TRIGGER accounts_stay BEFORE DELETE OR UPDATE OF id ON accounts FOR EACH ROW"
    " EXECUTE FUNCTION accounts_stay()"
)
_LOOSE_CALL_TABLES = (
    "".join(f"ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {t}_account_id_fkey;" for t in CALL_TABLES)
    + "CREATE FUNCTION accounts_stay() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
    " IF TG_OP = 'UPDATE' THEN IF NEW.id = OLD.id THEN RETURN NEW; END IF; END IF;"
    " RAISE EXCEPTION 'an account is never deleted or renamed: its calls and its journal name it'"
    " USING ERRCODE = 'restrict_violation'; END $$;"
    + _ACCOUNTS_STAY
    + ";CREATE TRIGGER accounts_stay_whole BEFORE TRUNCATE ON accounts FOR EACH STATEMENT"
    " EXECUTE FUNCTION accounts_stay()"
)

# Version 9 (PostgreSQL): the columns that name something (an account, an extension, a call, a day, a
# reference, a user, a key) compare byte by byte, as SQLite's do. Under the database's own collation
# every comparison in their indexes went through the C library's strcoll: a quarter of the server's
# instructions per call on an en_US.UTF-8 database (5% on C.UTF-8), for identifiers that have no
# language. A text column's collation is a change of its indexes only (rebuilt here), not of its rows;
# the trigger that names accounts.id is made again around it. Both backends now sort ids alike.
C_COLUMNS = {
    "accounts": ("id",),
    "extensions": ("account_id", "ext"),
    "reservations": ("call_id", "account_id", "ext"),
    "activity": ("call_id", "account_id", "ext", "day"),
    "activity_days": ("account_id", "day", "ext"),
    "journal": ("account_id", "reference"),
    "topups": ("reference", "account_id"),
    "audit": ("account_id",),
    "users": ("username", "account_id"),
    "cards": ("account_id", "provider", "customer"),
    "webhook_events": ("id",),
    "notices": ("account_id", "key"),
}


def collate_names(collation: str) -> str:
    """The script that gives every naming column `collation` ("C" in version 9; `bench_pg_instructions`
    puts "default" back to count what version 9 saves)."""
    return (
        "DROP TRIGGER accounts_stay ON accounts;"
        + "".join(
            f"ALTER TABLE {table} "
            + ", ".join(f'ALTER COLUMN {column} TYPE text COLLATE "{collation}"' for column in columns)
            + ";"
            for table, columns in C_COLUMNS.items()
        )
        + _ACCOUNTS_STAY
    )


# Version 3 (SQLite): money columns hold integers, always. SQLite's integer arithmetic turns into
# REAL on overflow and a column's declared type does not stop it, so a trigger refuses the write.
_INTEGER_MONEY = {
    "accounts": ("balance", "reserved", "threshold", "topup_amount", "floor"),
    "extensions": ("reserved", "day_spent", "month_spent"),
    "reservations": ("amount",),
    "journal": ("amount", "balance_after"),
    "activity": ("cost", "reserved", "balance_after", "billable_seconds"),
    "topups": ("amount",),
}


def _integer_triggers() -> str:
    out = []
    for table, columns in _INTEGER_MONEY.items():
        test = " OR ".join(f"typeof(NEW.{c}) <> 'integer'" for c in columns)
        for event in ("INSERT", "UPDATE"):
            out.append(
                f"CREATE TRIGGER {table}_integer_money_{event.lower()} BEFORE {event} ON {table}"
                f" WHEN {test} BEGIN SELECT RAISE(ABORT, 'money columns of {table} must be integers'); END"
            )
    return ";\n".join(out) + ";"


def migrations(dialect: str) -> list[tuple[int, str]]:
    """(version, script) pairs; a script is statements separated by ';' (none inside a statement but
    a trigger's body, which `statements` keeps whole)."""
    return [
        (1, _TABLES + _JOURNAL[dialect] + _JOURNAL_REST),
        (2, _LIMITS + _AUDIT[dialect] + _AUDIT_REST),
        (3, _integer_triggers() if dialect == "sqlite" else ""),  # PostgreSQL's BIGINT refuses by itself
        (4, _USERS + _ACTIVITY_DAYS[dialect]),
        (5, _CARDS + _NOTICES[dialect] + _NOTICES_REST),
        (6, _DAYS_PER_STATEMENT if dialect == "postgres" else ""),
        (7, _SETTINGS_REV),
        (8, _LOOSE_CALL_TABLES if dialect == "postgres" else ""),
        (9, collate_names("C") if dialect == "postgres" else ""),
    ]


LATEST = 9


def refuse_newer(current: int) -> None:
    """A database written by a newer rating-engine is left untouched."""
    from .models import SchemaTooNew

    if current > LATEST:
        raise SchemaTooNew(
            f"this ledger was written by a newer rating-engine (schema version {current}; "
            f"this one knows up to {LATEST}): upgrade rating-engine, nothing was changed"
        )


def upgrade_steps(current: int, dialect: str) -> list[tuple[int, list[str]]]:
    """What brings a ledger at schema `current` to LATEST: (version, statements), oldest first, each
    step to run in one transaction and then be recorded in schema_version. Refuses a newer ledger."""
    refuse_newer(current)
    return [(version, statements(script)) for version, script in migrations(dialect) if version > current]


def statements(script: str) -> list[str]:
    out: list[str] = []
    for part in script.split(";"):
        if out and out[-1].startswith("CREATE FUNCTION") and out[-1].count("$$") == 1:
            out[-1] += ";" + part.rstrip()  # the body of a PL/pgSQL function, between its $$
        elif out and out[-1].startswith("CREATE TRIGGER") and " BEGIN " in out[-1] and not out[-1].endswith("END"):
            out[-1] += ";" + part.rstrip()  # the statements inside a SQLite trigger's BEGIN … END
        elif part.strip():
            out.append(part.strip())
    return out
