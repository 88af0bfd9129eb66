"""A plan's rate tables: one deck, or one per time band with the calendar that picks them.

The destination (the row a decision names) is the one of the band at the call's start; the fare
takes each band's price for the same number, row validity judged at the call's start in every
band (effective dates work as without bands). The batch path cuts calls at the same band
changes with numpy; the tests hold both paths to each other and to a Decimal reading.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bands import Bands
from .price import UNLIMITED_SECONDS, Fare, IntArray, Price, PriceColumns, charged_seconds_array
from .table import NO_ROW, RateTable


@dataclass(frozen=True, slots=True)
class PlanRates:
    tables: tuple[RateTable, ...]
    """One per band, in the order of `bands.names`; a single table without bands."""
    bands: Bands | None = None
    timezone: str = "UTC"
    """The plan's zone, for an account that has none."""

    @classmethod
    def single(cls, table: RateTable) -> PlanRates:
        return cls((table,))

    def zone(self, tz: str | None) -> str:
        return tz or self.timezone

    def band_at(self, at: int, tz: str | None = None) -> int:
        return 0 if self.bands is None else self.bands.band_at(at, self.zone(tz))

    def band_name(self, band: int) -> str:
        return "" if self.bands is None else self.bands.names[band]

    def lookup(self, digits: str, at: int, tz: str | None = None) -> tuple[int, int]:
        """(band at `at`, row index in that band's table or NO_ROW)."""
        band = self.band_at(at, tz)
        return band, self.tables[band].lookup_index(digits, at)

    def fare(self, digits: str, at: int, row: int, tz: str | None = None) -> Fare:
        """The fare of a call to `digits` starting at `at`, whose start band's row is `row`."""
        start_band = self.band_at(at, tz)
        start_price = self.tables[start_band].rows[row].price
        if self.bands is None:
            return Fare.flat(start_price)
        edges, bands = self.bands.timeline(self.zone(tz), at, UNLIMITED_SECONDS)
        first = int(np.searchsorted(edges, at, side="right")) - 1
        pieces: list[tuple[int, Price]] = []
        for k in range(first, len(edges)):
            offset = max(edges[k] - at, 0)
            if offset >= UNLIMITED_SECONDS:
                break
            table = self.tables[bands[k]]
            i = table.lookup_index(digits, at)
            pieces.append((offset, table.rows[i].price if i != NO_ROW else start_price))
        return Fare(tuple(pieces))

    def fare_at(self, digits: str, at: int, tz: str | None = None) -> Fare | None:
        """The fare of a call to `digits` whose billing starts at `at` (its answer), if it has a rate."""
        _band, row = self.lookup(digits, at, tz)
        return None if row == NO_ROW else self.fare(digits, at, row, tz)

    def segment_costs(
        self, rows: list[IntArray], start_band: IntArray, starts: IntArray, seconds: IntArray, tz: str | None
    ) -> tuple[IntArray, IntArray]:
        """Vectorized `Fare.cost` and charged seconds over calls cut at the band changes.

        `rows[b]` is each call's row in band b's table (NO_ROW: the start band's price)."""
        assert self.bands is not None
        n = len(starts)
        cost = np.zeros(n, dtype=np.int64)
        charged_total = np.zeros(n, dtype=np.int64)
        if n == 0:
            return cost, charged_total
        t0, t1 = int(starts.min()), int((starts + seconds).max())
        edges_l, bands_l = self.bands.timeline(self.zone(tz), t0, t1 - t0 + 1)
        edges = np.array([*edges_l, 2**62], dtype=np.int64)
        bands = np.array([*bands_l, 0], dtype=np.int64)
        # Bands that share a deck share its columns: the choice is among distinct tables.
        slot = self.table_slots()
        distinct = {slot[b]: b for b in range(len(self.tables))}
        own = [self.tables[b].prices.take(np.maximum(rows[b], 0)) for b in distinct.values()]
        band_slot = np.array(slot, dtype=np.int64)
        start_price = self._price_of(own, band_slot[start_band])  # never missing: the call was priced in it
        columns = [_or(start_price, p, rows[b] == NO_ROW) for p, b in zip(own, distinct.values(), strict=True)]
        piece = np.searchsorted(edges, starts, side="right") - 1
        money = np.zeros(n, dtype=np.int64)
        at = np.flatnonzero(seconds > 0)  # the calls still running, segment after segment
        pos = np.zeros(len(at), dtype=np.int64)
        piece = piece[at]
        first_segment = True
        while len(at):
            if first_segment:  # the start band's price, already chosen
                p = start_price if len(at) == n else start_price.take(at)
            else:
                p = self._price_of([c.take(at) for c in columns], band_slot[bands[piece]])
            end = seconds[at]
            length = np.minimum(edges[piece + 1] - (starts[at] + pos), end - pos)
            # the call's first segment starts with the initial increment; a later one with its own
            charged = charged_seconds_array(length, p) if first_segment else -(-length // p.increment) * p.increment
            money[at] += -(-(charged * p.per_minute) // 60)
            charged_total[at] += charged
            pos += length
            going = pos < end
            at, pos, piece = at[going], pos[going], np.minimum(piece[going] + 1, len(edges) - 2)
            first_segment = False
        cost = np.where(seconds > 0, np.maximum(start_price.minimum, start_price.connect_fee + money), 0)
        return cost.astype(np.int64), charged_total

    def table_slots(self) -> list[int]:
        """Per band, the index of its table among the distinct ones (bands often share a deck)."""
        seen: dict[int, int] = {}
        return [seen.setdefault(id(t), len(seen)) for t in self.tables]

    @staticmethod
    def _price_of(columns: list[PriceColumns], band: IntArray) -> PriceColumns:
        if len(columns) == 1:
            return columns[0]
        return PriceColumns(*(np.choose(band, [getattr(c, f) for c in columns]) for f in _FIELDS))


_FIELDS = ("per_minute", "connect_fee", "initial", "increment", "minimum")


def _or(fallback: PriceColumns, own: PriceColumns, missing: IntArray) -> PriceColumns:
    """A band's price per call, the start band's where that band has no row for the number."""
    if not missing.any():
        return own
    return PriceColumns(*(np.where(missing, getattr(fallback, f), getattr(own, f)) for f in _FIELDS))
