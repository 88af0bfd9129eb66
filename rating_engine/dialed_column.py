"""Many dialed strings classified at once, as numpy columns: the batch path's `classify`.

The strings become one byte matrix (joined and encoded once, not converted one by one). The
forms `fast_parse` answers ("+CC…", the country's literal international prefix, its literal
national prefix, where phonenumbers' parse would do nothing more) are read from it with numpy,
and the compiled number table answers region, kind and validity by `searchsorted`. Every other
string (short codes, separators, other forms, a national number the national prefix for parsing
could change) goes through `classify` one by one, cached. Both give what `classify` gives: the
tests hold them to it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt
import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE

from . import number_table
from .digit_ranges import Unreducible, ranges
from .number_table import KEY_DIGITS, POWERS_OF_TEN, IntArray
from .numbering import MAX_SHORT_LENGTH, Classification, _country, _dialing, classify, of_class

BoolArray = npt.NDArray[np.bool_]
_P10 = POWERS_OF_TEN
_IS_CC = np.zeros(1000, dtype=bool)
_IS_CC[[cc for cc in COUNTRY_CODE_TO_REGION_CODE if cc < 1000]] = True


@dataclass(frozen=True, slots=True)
class Column:
    """Per dialed string: its class in the number table, or its classification in `slow`."""

    dialed: Sequence[str]
    cls: IntArray
    """Class id in `number_table.table()`; -1 where `slow` holds the answer."""
    value: IntArray
    """The E.164 digits as an integer (all of them: at most 18), 0 where there are none."""
    length: IntArray
    """How many E.164 digits; 0 for a short code or an invalid string."""
    slow: dict[int, Classification]

    def __len__(self) -> int:
        return len(self.cls)

    def number(self, i: int) -> Classification:
        got = self.slow.get(i)
        if got is not None:
            return got
        return of_class(int(self.cls[i]), str(self.dialed[i]), str(int(self.value[i])))


def _matrix(dialed: Sequence[str]) -> tuple[np.ndarray, IntArray] | None:
    """The strings as rows of bytes, right-aligned (NUL on the left, so that the digits' integer
    is read from the last bytes of every row alike), and their lengths; None if newlines or NULs
    are inside them."""
    if not dialed:
        return np.zeros((0, 1), dtype=np.uint8), np.zeros(0, dtype=np.int64)
    text = "\n".join(dialed).encode()
    buf = np.frombuffer(text, dtype=np.uint8)
    ends = np.flatnonzero(buf == 10)
    if len(ends) != len(dialed) - 1 or b"\0" in text:
        return None
    stops = np.concatenate((ends, [len(buf)]))
    sizes = stops - np.concatenate(([0], ends + 1))
    width = max(int(sizes.max()), 1)
    if width > 64:
        return None
    padded = np.concatenate((np.zeros(width, dtype=np.uint8), buf))
    rows = np.lib.stride_tricks.sliding_window_view(padded, width)[stops]  # the `width` bytes before each end
    rows[np.arange(width)[None, :] < (width - sizes)[:, None]] = 0
    return rows, sizes


def classify_column(dialed: Sequence[str], country: str) -> Column:
    """`classify(d, country)` for every string, as columns."""
    country = country.upper()
    m = len(dialed)
    cls = np.full(m, -1, dtype=np.int64)
    value = np.zeros(m, dtype=np.int64)
    length = np.zeros(m, dtype=np.int64)
    got = _matrix(dialed)
    fast = np.zeros(m, dtype=bool) if got is None else _fast(*got, country, cls, value, length)
    slow: dict[int, Classification] = {}
    for i in np.flatnonzero(~fast).tolist():
        c = classify(dialed[i], country)
        slow[i] = c
        digits = c.digits
        if digits and len(digits) <= KEY_DIGITS:
            value[i], length[i] = int(digits), len(digits)
    return Column(dialed, cls, value, length, slow)


def _fast(b: np.ndarray, size: IntArray, country: str, cls: IntArray, value: IntArray, length: IntArray) -> BoolArray:
    """Fill the rows the vectorized forms answer; returns which they are."""
    m, width = b.shape
    rows = np.arange(m)
    first = width - size

    def char(k: int) -> np.ndarray:
        out: np.ndarray = b[rows, np.minimum(first + k, width - 1)]
        return out

    digit = (b >= 48) & (b <= 57)
    odd = ~digit & (b != 0)  # neither a digit nor padding
    plus = char(0) == 43
    odd[rows, np.minimum(first, width - 1)] &= ~plus  # a leading "+" is allowed
    clean = (size > 0) & ~_any_per_row(odd)
    dialing = _dialing(country)
    idd = _starts_with(char, dialing.idd) & ~plus
    national = _starts_with(char, dialing.national) & ~plus & ~idd
    short = ~plus & (size <= MAX_SHORT_LENGTH)  # classify tries the short numbers first
    skip = np.where(plus, 1, np.where(idd, len(dialing.idd), len(dialing.national)))
    count = size - skip
    lead = b[rows, np.minimum(first + skip, width - 1)]  # the first digit after the prefix
    ok = clean & (plus | idd | national) & ~short & (count >= 1) & (count <= KEY_DIGITS) & (lead != 48)
    # Leading zeros and the '+' (taken as 0) do not change the integer: the last bytes hold it.
    v = _integers(np.where(digit, b, 48).astype(np.uint8))
    intl = ok & ~national
    # The country code: the first 1, 2 or 3 digits that are one (country codes are prefix-free).
    cc = np.zeros(m, dtype=np.int64)
    cc_len = np.zeros(m, dtype=np.int64)
    three = v // _P10[np.clip(count - 3, 0, KEY_DIGITS)]  # the first three digits (all, if fewer)
    two = np.where(count >= 3, three // 10, three)
    heads = [np.where(count >= 2, two // 10, two), two, three]  # the first one, two and three digits
    for n in (3, 2, 1):
        hit = intl & (count >= n) & _IS_CC[np.clip(heads[n - 1], 0, 999)]
        cc = np.where(hit, heads[n - 1], cc)
        cc_len = np.where(hit, n, cc_len)
    intl &= cc_len > 0
    home = phonenumbers.country_code_for_region(country)
    national &= ok & (home > 0) & (len(str(home)) + count <= KEY_DIGITS)
    cc = np.where(national, home, cc)
    nsn_len = np.where(national, count, count - cc_len)
    nsn = np.where(national, v, v % _P10[np.clip(nsn_len, 0, KEY_DIGITS)])
    good: BoolArray = (intl | national) & (nsn_len >= 1) & (nsn >= _P10[np.clip(nsn_len - 1, 0, KEY_DIGITS)])
    good &= (_possible_lengths()[np.clip(cc, 0, 999)] >> np.minimum(nsn_len, 62)) & 1 == 1
    good &= ~_parse_may_strip(cc, nsn, nsn_len, good)
    total = _len_of_cc(cc) + nsn_len
    e164 = cc * _P10[np.clip(nsn_len, 0, KEY_DIGITS)] + nsn
    got = number_table.table().class_ids(e164, total, good)
    good &= got >= 0
    cls[good], value[good], length[good] = got[good], e164[good], total[good]
    return good


def _any_per_row(flags: BoolArray) -> BoolArray:
    """`flags.any(axis=1)`, eight flags at a time (the rows read as 64-bit words)."""
    m, width = flags.shape
    pad = (-width) % 8
    if pad:
        flags = np.concatenate((np.zeros((m, pad), dtype=bool), flags), axis=1)
    words = np.ascontiguousarray(flags).view("<u8")
    out: BoolArray = words[:, 0] != 0
    for k in range(1, words.shape[1]):
        out |= words[:, k] != 0
    return out


def _integers(digits: np.ndarray) -> IntArray:
    """Each row of ASCII digits (non-digits already made '0') as an integer, eight bytes at a time
    by the SWAR method (three multiplies per eight digits, no division); only the last 24 digits
    count, and only rows of at most 18 significant digits are used (the rest may wrap)."""
    m, width = digits.shape
    pad = (-width) % 8
    if pad:
        digits = np.concatenate((np.full((m, pad), 48, dtype=np.uint8), digits), axis=1)
    words = np.ascontiguousarray(digits).view("<u8")
    with np.errstate(over="ignore"):
        x = (words & np.uint64(0x0F0F0F0F0F0F0F0F)) * np.uint64(2561) >> np.uint64(8)
        x = (x & np.uint64(0x00FF00FF00FF00FF)) * np.uint64(6553601) >> np.uint64(16)
        x = ((x & np.uint64(0x0000FFFF0000FFFF)) * np.uint64(42949672960001) >> np.uint64(32)) & np.uint64(0xFFFFFFFF)
        out = np.zeros(m, dtype=np.uint64)
        for k in range(max(0, x.shape[1] - 3), x.shape[1]):
            out = out * np.uint64(10**8) + x[:, k]
    return out.astype(np.int64)


def _len_of_cc(cc: IntArray) -> IntArray:
    return np.where(cc >= 100, 3, np.where(cc >= 10, 2, 1))


def _starts_with(char: Callable[[int], np.ndarray], prefix: str) -> BoolArray:
    out: BoolArray = np.full(len(char(0)), bool(prefix))
    for k, c in enumerate(prefix.encode()):
        out &= char(k) == c
    return out


@lru_cache(maxsize=1)
def _possible_lengths() -> IntArray:
    """Per country code below 1000, the bit mask of the national lengths `fast_parse` accepts."""
    out = np.zeros(1000, dtype=np.int64)
    for cc in COUNTRY_CODE_TO_REGION_CODE:
        info = _country(cc)
        if info is not None and cc < 1000:
            out[cc] = sum(1 << n for n in info[1] if n < 63)
    return out


def _parse_may_strip(cc: IntArray, nsn: IntArray, nsn_len: IntArray, rows: BoolArray) -> BoolArray:
    """Where the country's national prefix for parsing matches the national number (`fast_parse`
    leaves those to parse), per (country code, length) as ranges of the pattern."""
    out = np.zeros(cc.shape, dtype=bool)
    idx = np.flatnonzero(rows & _npp_live()[np.clip(cc, 0, 999)])
    if idx.size == 0:
        return out
    pair = cc[idx] * 64 + nsn_len[idx]
    order = np.argsort(pair, kind="stable")
    idx, pair = idx[order], pair[order]
    cuts = np.flatnonzero(np.diff(pair)) + 1
    for group in np.split(np.arange(len(idx)), cuts):
        c, n = divmod(int(pair[group[0]]), 64)
        info = _country(c)
        assert info is not None and info[0] is not None  # _npp_live says so
        lo, hi = _npp_ranges(info[0].pattern, n)
        at_rows = idx[group]
        if lo is None:
            out[at_rows] = True  # not reduced: parse decides
            continue
        if lo.size == 0:
            continue  # the prefix matches no national number of this length (+352 1000)
        at = np.searchsorted(lo, nsn[at_rows], side="right") - 1
        out[at_rows] = (at >= 0) & (nsn[at_rows] < hi[np.maximum(at, 0)])
    return out


@lru_cache(maxsize=1)
def _npp_live() -> BoolArray:
    """Per country code, whether its national prefix for parsing can match a national number that
    does not start with 0 (most are "0": they never can, and cost nothing)."""
    out = np.zeros(1000, dtype=bool)
    for cc in COUNTRY_CODE_TO_REGION_CODE:
        info = _country(cc)
        if cc >= 1000 or info is None or info[0] is None:
            continue
        for n in range(1, number_table.MAX_NSN + 1):
            lo, hi = _npp_ranges(info[0].pattern, n)
            if lo is None or (len(hi) and hi[-1] > 10 ** (n - 1)):
                out[cc] = True
                break
    return out


@lru_cache(maxsize=4096)
def _npp_ranges(pattern: str, n: int) -> tuple[IntArray | None, IntArray]:
    try:
        rs = ranges(pattern, n, prefix=True)
    except Unreducible:
        return None, np.zeros(0, dtype=np.int64)
    return np.array([a for a, _b in rs], dtype=np.int64), np.array([b for _a, b in rs], dtype=np.int64)
