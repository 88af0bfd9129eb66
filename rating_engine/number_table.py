"""phonenumbers' metadata compiled into ranges: region, kind and validity of any E.164 number
by one binary search.

What phonenumbers computes for a parsed number (region_code_for_number, is_possible_number,
number_type) depends only on its digits, and through patterns that `digit_ranges` reduces to
ranges. So, per total length of the E.164 digits (country code + national number), the table
holds sorted range starts and, per range, a class: (region, kind, why it is invalid). A single
number is found with `bisect` on `array` copies; a batch with numpy's `searchsorted`, per length.

The classes are computed by replaying phonenumbers' own rules on one representative of each
elementary range (the ranges of every pattern of the country code cut each other into pieces on
which every pattern agrees), and the possible lengths are asked of phonenumbers itself, so the
table says what phonenumbers says. A country code with a pattern the compiler cannot reduce is
marked ASK: its numbers go to phonenumbers (none in phonenumbers 9.0; the tests would say).

Keys: the digits as an integer, cut to 18 digits (int64). For the few longer numbers (19 and 20
digits) every range edge must fall on a multiple of the cut, which the build checks (else ASK).

Pure: building reads phonenumbers' metadata only. `number_cache` stores it per version.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata, PhoneNumberType

from .digit_ranges import Unreducible, ranges

VERSION = 1
"""Of the compiler: a cached table from another version is rebuilt."""
KEY_DIGITS = 18
MIN_NSN, MAX_NSN = 2, 17
"""The national numbers phonenumbers.parse can return (shorter or longer raise)."""
MAX_DIGITS = 3 + MAX_NSN
POWERS_OF_TEN = np.array([10**k for k in range(KEY_DIGITS + 1)], dtype=np.int64)
"""10^0 … 10^18, for the vectorized digit arithmetic of the batch paths."""
NO_CLASS = -1
"""Not any country code: nothing phonenumbers could have parsed."""
ASK = -2
"""A country code whose patterns did not reduce: ask phonenumbers."""

IMPOSSIBLE = "impossible number length"
NO_RANGE = "no such number range"

# phonenumbers' own order of the special types, then fixed and mobile (see _number_type_helper).
_SPECIAL = (
    ("premium_rate", PhoneNumberType.PREMIUM_RATE),
    ("toll_free", PhoneNumberType.TOLL_FREE),
    ("shared_cost", PhoneNumberType.SHARED_COST),
    ("voip", PhoneNumberType.VOIP),
    ("personal_number", PhoneNumberType.PERSONAL_NUMBER),
    ("pager", PhoneNumberType.PAGER),
    ("uan", PhoneNumberType.UAN),
    ("voicemail", PhoneNumberType.VOICEMAIL),
)

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class NumberClass:
    """What phonenumbers says of every number in a range; `kind` is a PhoneNumberType."""

    region: str
    kind: int
    reason: str = ""
    """Empty for a valid number, else IMPOSSIBLE or NO_RANGE (our classification's reasons)."""


class _Set:
    """Sorted disjoint ranges, with membership by bisect."""

    def __init__(self, rs: list[tuple[int, int]]) -> None:
        self.lo = [a for a, _b in rs]
        self.hi = [b for _a, b in rs]

    def __contains__(self, v: int) -> bool:
        i = bisect_right(self.lo, v) - 1
        return i >= 0 and v < self.hi[i]

    def edges(self) -> Iterable[int]:
        yield from self.lo
        yield from self.hi


_EMPTY = _Set([])


def _desc_set(desc: object, n: int) -> _Set:
    """`_is_number_matching_desc` for n-digit national numbers, as a set."""
    pattern = getattr(desc, "national_number_pattern", None) if desc is not None else None
    if not pattern:
        return _EMPTY
    lengths = getattr(desc, "possible_length", None) or ()
    if lengths and n not in lengths:
        return _EMPTY
    return _Set(ranges(pattern, n))


@dataclass(frozen=True, slots=True)
class _Types:
    """One region's type descriptions for n-digit national numbers."""

    general: _Set
    special: tuple[tuple[_Set, int], ...]
    fixed: _Set
    mobile: _Set
    same: bool

    @classmethod
    def of(cls, meta: PhoneMetadata, n: int) -> _Types:
        return cls(
            _desc_set(meta.general_desc, n),
            tuple((_desc_set(getattr(meta, name), n), t) for name, t in _SPECIAL),
            _desc_set(meta.fixed_line, n),
            _desc_set(meta.mobile, n),
            bool(meta.same_mobile_and_fixed_line_pattern),
        )

    def sets(self) -> Iterable[_Set]:
        yield self.general
        yield from (s for s, _t in self.special)
        yield self.fixed
        yield self.mobile

    def kind(self, v: int) -> int:
        """phonenumbers' `_number_type_helper`, on the value of an n-digit national number."""
        if v not in self.general:
            return PhoneNumberType.UNKNOWN
        for s, t in self.special:
            if v in s:
                return t
        if v in self.fixed:
            return PhoneNumberType.FIXED_LINE_OR_MOBILE if self.same or v in self.mobile else PhoneNumberType.FIXED_LINE
        if not self.same and v in self.mobile:
            return PhoneNumberType.MOBILE
        return PhoneNumberType.UNKNOWN


def _possible(cc: int, n: int) -> bool:
    """phonenumbers' is_possible_number depends on the national number's length only: ask it."""
    return bool(
        phonenumbers.is_possible_number(phonenumbers.PhoneNumber(country_code=cc, national_number=int("1" * n)))
    )


def _country_ranges(cc: int, n: int) -> list[tuple[int, NumberClass]]:
    """(start, class) of the ranges of n-digit national numbers of `cc`, merged where equal."""
    regions = COUNTRY_CODE_TO_REGION_CODE[cc]
    metas = {r: PhoneMetadata.metadata_for_region_or_calling_code(cc, r) for r in regions}
    types = {r: _Types.of(m, n) for r, m in metas.items() if m is not None}
    leading: dict[str, _Set] = {}
    edges = {0, 10**n}
    if len(regions) > 1:
        for r in regions:
            m = PhoneMetadata.metadata_for_region(r, None)  # as _region_code_for_number_from_list
            if m is not None and m.leading_digits is not None:
                leading[r] = _Set(ranges(m.leading_digits, n, prefix=True))
                edges.update(leading[r].edges())
    for t in types.values():
        for s in t.sets():
            edges.update(s.edges())
    possible = _possible(cc, n)
    out: list[tuple[int, NumberClass]] = []
    for start in sorted(e for e in edges if e < 10**n):
        region = _region(start, regions, leading, types)
        kind = types[region].kind(start) if region in types else PhoneNumberType.UNKNOWN
        reason = IMPOSSIBLE if not possible else NO_RANGE if kind == PhoneNumberType.UNKNOWN else ""
        cls = NumberClass(region, int(kind), reason)
        if not out or out[-1][1] != cls:
            out.append((start, cls))
    return out


def _region(v: int, regions: Sequence[str], leading: dict[str, _Set], types: dict[str, _Types]) -> str:
    """phonenumbers' region_code_for_number ('' for None)."""
    if len(regions) == 1:
        return regions[0]
    for r in regions:
        if PhoneMetadata.metadata_for_region(r, None) is None:
            continue
        if r in leading:
            if v in leading[r]:
                return r
        elif r in types and types[r].kind(v) != PhoneNumberType.UNKNOWN:
            return r
    return ""


class NumberTable:
    """The compiled table: per total digit count, range starts and their class ids."""

    def __init__(self, classes: Sequence[NumberClass], starts: Sequence[IntArray], ids: Sequence[IntArray]) -> None:
        self.classes = tuple(classes)
        self.starts = [np.ascontiguousarray(s, dtype=np.int64) for s in starts]
        self.ids = [np.ascontiguousarray(i, dtype=np.int64) for i in ids]
        self._starts_list = [array("q", s.tobytes()) for s in self.starts]
        self._ids_list = [array("q", i.tobytes()) for i in self.ids]
        # Lengths 1 to 18 in one sorted uint64 column, (length − 1)·10^18 + digits: a batch of any
        # lengths is then one searchsorted.
        short = range(1, KEY_DIGITS + 1)
        self._all_starts = np.concatenate(
            [np.zeros(1, np.uint64)]
            + [self.starts[n].astype(np.uint64) + np.uint64((n - 1) * 10**KEY_DIGITS) for n in short]
        )
        self._all_ids = np.concatenate([np.full(1, NO_CLASS, np.int64)] + [self.ids[n] for n in short])

    @property
    def nbytes(self) -> int:
        """Memory of the arrays (numpy and `array` copies)."""
        return 2 * sum(a.nbytes for a in (*self.starts, *self.ids)) + self._all_starts.nbytes + self._all_ids.nbytes

    def __len__(self) -> int:
        return sum(len(s) for s in self.starts)

    def class_id(self, digits: str) -> int:
        """Class of E.164 digits (no '+'): an index into `classes`, NO_CLASS or ASK."""
        n = len(digits)
        if not 0 < n <= MAX_DIGITS:
            return NO_CLASS
        starts = self._starts_list[n]
        i = bisect_right(starts, int(digits[:KEY_DIGITS])) - 1
        return self._ids_list[n][i] if i >= 0 else NO_CLASS

    def class_ids(self, keys: IntArray, lengths: IntArray, where: npt.NDArray[np.bool_] | None = None) -> IntArray:
        """`class_id` per number: `keys` are the digits as integers cut to KEY_DIGITS, `lengths` their
        counts. With `where` (rows of 1 to KEY_DIGITS digits), one searchsorted; NO_CLASS elsewhere."""
        if where is not None:
            joined = keys.astype(np.uint64) + (lengths - 1).astype(np.uint64) * np.uint64(10**KEY_DIGITS)
            joined[~where] = 0  # before every start: NO_CLASS
            return self._all_ids[np.searchsorted(self._all_starts, joined, side="right") - 1]
        out = np.full(keys.shape, NO_CLASS, dtype=np.int64)
        for n in np.unique(lengths).tolist():
            if not 0 < n <= MAX_DIGITS or len(self.starts[n]) == 0:
                continue
            mask = lengths == n
            at = np.searchsorted(self.starts[n], keys[mask], side="right") - 1
            out[mask] = np.where(at >= 0, self.ids[n][np.maximum(at, 0)], NO_CLASS)
        return out


def build() -> NumberTable:
    """Compile every country code of this phonenumbers' metadata (a few seconds)."""
    classes: dict[NumberClass, int] = {}
    per_length: list[list[tuple[int, int]]] = [[] for _ in range(MAX_DIGITS + 1)]
    for cc in sorted(COUNTRY_CODE_TO_REGION_CODE):
        head = len(str(cc))
        for n in range(MIN_NSN, MAX_NSN + 1):
            total = head + n
            cut = 10 ** max(0, total - KEY_DIGITS)
            base = cc * 10**n
            try:
                pieces = _country_ranges(cc, n)
                if any(start % cut for start, _c in pieces):
                    raise Unreducible(f"+{cc}: ranges finer than the key at {total} digits")
            except Unreducible:
                per_length[total] += [(base // cut, ASK), ((base + 10**n) // cut, NO_CLASS)]
                continue
            for start, cls in pieces:
                per_length[total].append(((base + start) // cut, classes.setdefault(cls, len(classes))))
            per_length[total].append(((base + 10**n) // cut, NO_CLASS))
    starts, ids = [], []
    for entries in per_length:
        entries.sort(key=lambda e: (e[0], e[1] != NO_CLASS))  # an end marker before a start there
        kept: list[tuple[int, int]] = []
        for start, cid in entries:
            if kept and kept[-1][0] == start:
                kept[-1] = (start, cid)  # a country's end marker meets the next country's start
            elif not kept or kept[-1][1] != cid:
                kept.append((start, cid))
        starts.append(np.array([s for s, _c in kept], dtype=np.int64))
        ids.append(np.array([c for _s, c in kept], dtype=np.int64))
    return NumberTable(list(classes), starts, ids)


_table: NumberTable | None = None


def table() -> NumberTable:
    """The table in use: installed by `number_cache` at start-up, else compiled on first use."""
    global _table
    if _table is None:
        _table = build()
    return _table


def installed() -> bool:
    return _table is not None


def install(t: NumberTable) -> None:
    global _table
    _table = t
