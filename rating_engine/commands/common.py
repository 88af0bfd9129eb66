"""Small helpers shared by the subcommands: times, output, progress."""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from ..errors import ConfigError

LAST_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z: every time accepted can be printed back


def parse_time(text: str) -> int:
    """ISO 8601 (a time without zone is read as UTC) or unix seconds → unix seconds, 1970 to 9999."""
    s = text.strip()
    digits = s.removeprefix("-")
    if digits.isascii() and digits.isdigit():
        value = int(s) if len(digits) <= 12 else -1
    else:
        try:
            when = datetime.fromisoformat(s)
        except ValueError:
            raise ConfigError(f"not an ISO 8601 time or unix seconds: {text!r}") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        value = int(when.timestamp())
    if not 0 <= value <= LAST_SECOND:
        raise ConfigError(f"time out of range (1970 to 9999): {text!r}")
    return value


def iso(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def table(rows: list[list[str]], header: list[str], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    for r in [header, ["-" * w for w in widths], *rows]:
        out.write("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)).rstrip() + "\n")


class Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, total: int, label: str, stream: TextIO = sys.stderr) -> None:
        self.total, self.label, self.stream = max(total, 1), label, stream
        self.enabled = stream.isatty()
        self.started = time.monotonic()

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        frac = min(done / self.total, 1.0)
        bar = "#" * int(frac * 30)
        rate = done / max(time.monotonic() - self.started, 1e-9)
        self.stream.write(f"\r{self.label} [{bar:<30}] {frac:6.1%} {done:,} rows {rate:,.0f}/s")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")


def safe_url(url: str) -> str:
    """A ledger URL without its password."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)
