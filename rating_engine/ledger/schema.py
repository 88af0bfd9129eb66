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


def migrations(dialect: str) -> list[tuple[int, str]]:
    """(version, script) pairs; a script is statements separated by ';'."""
    return [(1, _TABLES + _JOURNAL[dialect] + _JOURNAL_REST)]


LATEST = 1


def refuse_newer(current: int) -> None:
    """A database written by a newer rating-engine is left untouched."""
    from .models import SchemaTooNew

    if current > LATEST:
        raise SchemaTooNew(
            f"this ledger was written by a newer rating-engine (schema version {current}; "
            f"this one knows up to {LATEST}): upgrade rating-engine, nothing was changed"
        )


def statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
