"""Asterisk's own record of each call, read back after the engine was away.

AMI events missed while the engine was down are gone for good, and without them an answered
call looks unanswered. Asterisk also writes every CDR to a file of our columns (`cdr_custom`,
the mapping in `asterisk_conf/cdr_custom.conf`), whatever the engine is doing; reconciliation
reads the answer time and billable seconds of the calls it lost from there.

    "uniqueid","answer epoch","end epoch","billsec","disposition","dstchannel"
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("rating_engine.cdr")
COLUMNS = ("uniqueid", "answer", "end", "billsec", "disposition", "dstchannel")


@dataclass(frozen=True, slots=True)
class CdrRecord:
    uniqueid: str
    answer: float | None
    """Unix time the call was answered; None when it never was."""
    end: float
    billsec: int
    disposition: str
    dstchannel: str


def parse_row(cells: list[str]) -> CdrRecord | None:
    """One line of the file, or None when it is not one of ours (or damaged)."""
    if len(cells) < len(COLUMNS):
        return None
    uid, answer, end, billsec, disposition, dst = (c.strip() for c in cells[: len(COLUMNS)])
    try:
        answered = float(answer) if answer else 0.0
        ended = float(end) if end else 0.0
    except ValueError:
        return None
    if not uid or not (billsec.isascii() and billsec.isdigit()):
        return None
    return CdrRecord(uid, answered if answered > 0 else None, ended, int(billsec), disposition, dst)


def format_row(record: CdrRecord) -> str:
    """A line of the file as `cdr_custom.conf`'s mapping writes it (CSV_QUOTE): `parse_row`'s inverse,
    for the simulator and the tests that play Asterisk's side."""
    answer = f"{record.answer:.6f}" if record.answer else ""
    cells = (record.uniqueid, answer, f"{record.end:.6f}", str(record.billsec), record.disposition, record.dstchannel)
    return ",".join('"' + c.replace('"', '""') + '"' for c in cells) + "\n"


class CdrRecords:
    """The CDR file Asterisk appends to; looked up by caller channel Uniqueid."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def find(self, uids: Iterable[str]) -> dict[str, CdrRecord]:
        """The record of each call (its caller channel's CDR with a called channel), if written.

        A call has several CDRs (one per channel pair); the caller's with a destination is the one
        that holds its answer and billable time. A later record of the same channel wins. A caller
        that dialed also gets records without one (the dialplan after a busy Dial, say), so one of
        those is returned only where the caller has no other: it never dialed.
        """
        wanted = set(uids)
        found: dict[str, CdrRecord] = {}
        if not wanted:
            return found
        try:
            with self.path.open(newline="", encoding="utf-8", errors="replace") as f:
                for cells in csv.reader(f):
                    if cells and cells[0] in wanted:
                        record = parse_row(cells)
                        if record is not None and (record.dstchannel or record.uniqueid not in found):
                            found[record.uniqueid] = record
        except OSError as exc:
            log.error("cannot read the CDR file", extra={"path": str(self.path), "error": exc.strerror})
        return found
