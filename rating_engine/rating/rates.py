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
        own = [t.prices.take(np.maximum(r, 0)) for t, r in zip(self.tables, rows, strict=True)]
        start_price = self._price_of(own, start_band)  # never missing: the call was priced in it
        columns = [_or(start_price, p, r == NO_ROW) for p, r in zip(own, rows, strict=True)]
        first = start_price
        piece = np.searchsorted(edges, starts, side="right") - 1
        pos = np.zeros(n, dtype=np.int64)
        money = np.zeros(n, dtype=np.int64)
        k = 0
        active = seconds > pos
        while active.any():
            band = bands[piece]
            length = np.where(active, np.minimum(edges[piece + 1] - (starts + pos), seconds - pos), 0)
            p = self._price_of(columns, band)
            if k == 0:
                charged = charged_seconds_array(length, p)
            else:
                charged = np.where(length > 0, -(-length // p.increment) * p.increment, 0)
            money += -(-(charged * p.per_minute) // 60)
            charged_total += charged
            pos += length
            piece = np.minimum(piece + 1, len(edges) - 2)
            k += 1
            active = seconds > pos
        cost = np.where(seconds > 0, np.maximum(first.minimum, first.connect_fee + money), 0)
        return cost.astype(np.int64), charged_total

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
