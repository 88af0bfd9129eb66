"""Shared builders for the tests: decks from rows, reference implementations."""

from __future__ import annotations

import math
import os
import re
import stat
from decimal import Decimal
from pathlib import Path

import pytest

from rating_engine.cli import main
from rating_engine.metrics import BUCKETS, Histogram
from rating_engine.money import MICRO
from rating_engine.rating.deck import COLUMNS, Deck, parse_deck
from rating_engine.rating.price import Price

from .conftest import OFFICE_FR

HEADER = ",".join(COLUMNS)
EUR = MICRO
"""One euro in micro-units."""


def csrf_token(html: str) -> str:
    """The CSRF token a page's form carries (asgi-csrf's hidden field)."""
    found = re.search(r'name="csrftoken" value="([^"]+)"', html)
    assert found, "every form carries the CSRF token"
    return found.group(1)


def observed_above(h: Histogram, seconds: float) -> int:
    """Observations in the buckets above `seconds`, one of the buckets' bounds."""
    return h.n - sum(h.counts[: BUCKETS.index(seconds) + 1])


def deck_text(*rows: str) -> str:
    return "\n".join([HEADER, *rows]) + "\n"


def deck(*rows: str) -> Deck:
    return parse_deck(deck_text(*rows), "test.csv")


def reference_cost(seconds: int, p: Price) -> int:
    """The formula of docs/money-and-reservations.md in Decimal arithmetic, written apart from price.py."""
    if seconds <= 0:
        return 0
    charged = max(p.initial, p.initial + math.ceil(Decimal(seconds - p.initial) / p.increment) * p.increment)
    return max(p.minimum, p.connect_fee + math.ceil(Decimal(charged) * p.per_minute / 60))


def record_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths Python's `os.fsync` is called on from now on, in order (what the engine makes
    durable; SQLite's own fsyncs are in C and not seen)."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def fail_directory_fsyncs(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """From now on a directory's `os.fsync` fails with errno `code` (EINVAL: some network and FUSE
    file systems; EIO: a failing disk); a file's goes through."""
    fsync = os.fsync

    def failing(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(code, os.strerror(code))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", failing)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`rating-engine ARGV` in process: (exit code, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def office_plan_on(deck: Path) -> Path:
    """The sample office plan beside `deck`, pricing from it (a deck a test writes)."""
    plan = deck.with_name("plan.toml")
    plan.write_text(OFFICE_FR.read_text().replace('deck = "world.csv"', f'deck = "{deck.name}"'))
    return plan
