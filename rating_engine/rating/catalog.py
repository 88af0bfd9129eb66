"""Plans and their compiled decks, loaded together and swapped as one reference.

`TariffStore.reload()` builds a complete new `Tariffs` first; only when every file loads
does it replace the old one with a single assignment, so an authorization in flight sees
the old set or the new set, never half of each, and a bad file changes nothing.

A running engine reloads with `load_in_child()`: a wholesale deck takes seconds of Python to
parse and compile, which on the event loop (or in a thread, holding the GIL) would stall every
FastAGI answer; in a child process it costs the loop nothing but the final swap. The child is
started fresh ("spawn"), never forked from a process that holds threads and sockets.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import TariffError, TariffErrors
from .deck import Deck, load_deck
from .plan import Plan, load_plan
from .rates import PlanRates
from .table import RateTable


@dataclass(frozen=True, slots=True)
class Tariffs:
    plans: dict[str, Plan]
    tables: dict[Path, RateTable]
    by_plan: dict[str, RateTable]
    """Each plan's table, found once at load: `Path.resolve()` at every call is file system calls."""
    rates: dict[str, PlanRates]
    """Each plan's tables with its time bands (one table when it has none)."""

    def plan(self, name: str) -> Plan:
        try:
            return self.plans[name]
        except KeyError:
            known = ", ".join(sorted(self.plans)) or "none"
            raise TariffError(f"unknown plan {name!r} (loaded: {known})") from None

    def table_for(self, plan: Plan) -> RateTable:
        if self.plans.get(plan.name) is plan:
            return self.by_plan[plan.name]
        return self.tables[plan.deck.resolve()]

    def rates_for(self, plan: Plan) -> PlanRates:
        if self.plans.get(plan.name) is plan:
            return self.rates[plan.name]
        return _rates(plan, self.tables)

    def warnings(self) -> list[str]:
        """What loads but is most likely a mistake. A deck with no rates (a header alone: an
        export cut short, say) prices nothing, so its plan refuses every call it does not include;
        loaded by a reload, it would do so from one moment to the next."""
        out: list[str] = []
        for name, plan in sorted(self.plans.items()):
            for deck in dict.fromkeys((plan.deck, *plan.band_decks)):
                if len(self.tables[deck.resolve()]) == 0:
                    out.append(f"{deck}: no rates: plan {name!r} refuses every call it does not include (no_rate)")
        return out


def load_tariffs(plan_paths: Iterable[str | Path]) -> Tariffs:
    """Load every plan and the decks they name; all-or-nothing, every problem reported."""
    errors: list[TariffError] = []
    plans: dict[str, Plan] = {}
    tables: dict[Path, RateTable] = {}
    for path in plan_paths:
        try:
            plan = load_plan(path)
        except TariffErrors as exc:
            errors.extend(exc.errors)
            continue
        if plan.name in plans:
            errors.append(TariffError(f"plan name {plan.name!r} is used twice", str(path)))
            continue
        plans[plan.name] = plan
        for deck in (plan.deck, *plan.band_decks):
            key = deck.resolve()
            if key not in tables:
                try:
                    tables[key] = RateTable(load_deck(deck))
                except TariffErrors as exc:
                    errors.extend(exc.errors)
                    tables[key] = RateTable(Deck())  # reported; keeps the other checks going
    for plan in plans.values():
        errors.extend(_same_prefixes(plan, tables))
    if errors:
        raise TariffErrors(errors)
    by_plan = {name: tables[plan.deck.resolve()] for name, plan in plans.items()}
    return Tariffs(plans, tables, by_plan, {name: _rates(plan, tables) for name, plan in plans.items()})


def _rates(plan: Plan, tables: dict[Path, RateTable]) -> PlanRates:
    if plan.bands is None:
        return PlanRates((tables[plan.deck.resolve()],), None, plan.timezone)
    return PlanRates(tuple(tables[d.resolve()] for d in plan.band_decks), plan.bands, plan.timezone)


def _same_prefixes(plan: Plan, tables: dict[Path, RateTable]) -> list[TariffError]:
    """Every band's deck prices the same prefixes: a call crossing bands finds its number in each."""
    if plan.bands is None:
        return []
    out: list[TariffError] = []
    decks = [tables[d.resolve()].deck for d in plan.band_decks]
    sets = [set(zip(d.columns.prefix_len.tolist(), d.columns.prefix_value.tolist(), strict=True)) for d in decks]
    for deck, have in zip(decks, sets, strict=True):
        for other_band, other, theirs in zip(plan.bands.names, decks, sets, strict=True):
            missing = sorted(have - theirs)
            if missing and deck is not other:
                length, value = missing[0]
                line = next(r.line for r in deck.rows if r.prefix == str(value).zfill(length))
                more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
                out.append(TariffError(
                    f"prefix {str(value).zfill(length)} has no price in band {other_band!r} ({other.source}){more}",
                    deck.source, line,
                ))  # fmt: skip
    return out


class TariffStore:
    """Holds the live `Tariffs`; readers take `.current` once per call."""

    def __init__(self, plan_paths: Iterable[str | Path]) -> None:
        self.paths = [Path(p) for p in plan_paths]
        self._current = load_tariffs(self.paths)

    @property
    def current(self) -> Tariffs:
        return self._current

    def reload(self) -> Tariffs:
        return self.swap(load_tariffs(self.paths))

    def swap(self, fresh: Tariffs) -> Tariffs:
        self._current = fresh
        return fresh


def load_in_child(plan_paths: Iterable[str | Path]) -> Future[Tariffs]:
    """`load_tariffs` in a fresh child process; the future holds the Tariffs or the error it raised.

    The result is unpickled by the executor's own thread, not by the caller (numpy columns: a
    memory copy, ~0.1 s for a million-row deck)."""
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    try:
        future = pool.submit(load_tariffs, [str(p) for p in plan_paths])
    finally:
        pool.shutdown(wait=False)  # the worker exits once its one job is done
    return future
