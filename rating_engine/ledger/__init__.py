"""The prepaid ledger: accounts, reservations, settlement, top-ups, activity.

`open_ledger(url)` picks the backend: `sqlite:///path` (the embedded default) or
`postgresql://…` (several engines sharing accounts). Both run the same programs.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..contract import Refusal
from ..errors import ConfigError
from .base import Ledger
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
    SchemaTooNew,
    SettleResult,
    Topup,
    TopupRequest,
    TopupStatus,
    User,
    extension_totals,
)

__all__ = [
    "Account",
    "AccountSettings",
    "ActivityRow",
    "AuditEntry",
    "CallDetails",
    "Card",
    "CheckProblem",
    "DaySpending",
    "Extension",
    "ExtensionSettings",
    "ExtensionTotals",
    "Ledger",
    "LedgerError",
    "Notice",
    "OnLow",
    "Refusal",
    "Reservation",
    "ReserveResult",
    "SchemaTooNew",
    "SettleResult",
    "Topup",
    "TopupRequest",
    "TopupStatus",
    "User",
    "data_dir",
    "default_url",
    "extension_totals",
    "open_ledger",
]


def data_dir() -> Path:
    """$RATING_ENGINE_DATA, else $XDG_DATA_HOME/rating-engine, else ~/.local/share/rating-engine."""
    env = os.environ.get("RATING_ENGINE_DATA")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "rating-engine"


def default_url() -> str:
    return f"sqlite:///{data_dir() / 'ledger.sqlite3'}"


def sqlite_file(url: str) -> Path | None:
    """The file a `sqlite:///path` URL names; None for an in-memory ledger (`sqlite:///` or
    `sqlite:///:memory:`, as SQLite reads them) or another backend."""
    if url not in ("sqlite:///", "sqlite:///:memory:") and url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///"))
    return None


def make_ledger(url: str) -> Ledger:
    if url.startswith("sqlite:///"):
        from .sqlite import SqliteLedger

        return SqliteLedger(url.removeprefix("sqlite:///") or ":memory:")
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresLedger

        return PostgresLedger(url)
    raise ConfigError(f"unsupported ledger URL {url!r}: use sqlite:///path or postgresql://…")


async def open_ledger(url: str) -> Ledger:
    ledger = make_ledger(url)
    await ledger.open()
    return ledger
