"""A phonenumbers pattern → the digit strings of one length it matches, as integer ranges.

phonenumbers' metadata describes number ranges with a small regular-expression subset: digits,
`\\d`, classes such as `[2-9]`, groups, `|`, `?` and `{n}` / `{n,m}` (and `$` in the national
prefixes for parsing). Over strings of a fixed length n such a pattern matches a set of n-digit
strings, which is a union of ranges [lo, hi) of their integer values: a branch that ends in
`\\d{k}` matches a block of 10^k consecutive values. `ranges` walks the pattern's automaton one
digit at a time and closes a range as soon as every continuation matches (or none does), so the
work is proportional to the ranges produced, not to 10^n.

Anything outside that subset raises `Unreducible`: the caller then keeps asking phonenumbers for
those numbers. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

ALL_DIGITS = 0x3FF


class Unreducible(ValueError):
    """The pattern uses something this compiler does not reduce to ranges."""


@dataclass
class _Nfa:
    """States with digit edges (a 10-bit mask each), free edges, and free edges only taken at the end."""

    edges: list[list[tuple[int, int]]] = field(default_factory=list)
    free: list[list[int]] = field(default_factory=list)
    at_end: list[list[int]] = field(default_factory=list)

    def state(self) -> int:
        self.edges.append([])
        self.free.append([])
        self.at_end.append([])
        return len(self.edges) - 1


class _Parser:
    """Recursive descent over the subset; builds a Thompson automaton."""

    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0
        self.nfa = _Nfa()

    def fail(self, why: str) -> Unreducible:
        return Unreducible(f"{why} at {self.i} in {self.p!r}")

    def peek(self) -> str:
        return self.p[self.i] if self.i < len(self.p) else ""

    def parse(self) -> tuple[_Nfa, int, int]:
        start, end = self.alternation()
        if self.i != len(self.p):
            raise self.fail("unexpected character")
        return self.nfa, start, end

    def alternation(self) -> tuple[int, int]:
        start, end = self.nfa.state(), self.nfa.state()
        while True:
            s, e = self.sequence()
            self.nfa.free[start].append(s)
            self.nfa.free[e].append(end)
            if self.peek() != "|":
                return start, end
            self.i += 1

    def sequence(self) -> tuple[int, int]:
        start = end = self.nfa.state()
        while self.peek() not in ("", "|", ")"):
            if self.peek() == "$":
                self.i += 1
                nxt = self.nfa.state()
                self.nfa.at_end[end].append(nxt)
                end = nxt
                continue
            atom = self.i
            s, e = self.atom()
            lo, hi = self.quantifier()
            end = self._repeat(end, atom, s, e, lo, hi)
        return start, end

    def _repeat(self, end: int, atom: int, s: int, e: int, lo: int, hi: int) -> int:
        """Append the atom lo to hi times after `end`; each copy is the atom parsed again."""
        after = self.i
        copies = [(s, e)]
        for _ in range(hi - 1):
            self.i = atom
            copies.append(self.atom())
        self.i = after
        optional_ends = []
        for n, (cs, ce) in enumerate(copies):
            self.nfa.free[end].append(cs)
            if n >= lo:
                optional_ends.append(end)
            end = ce
        for o in optional_ends:
            self.nfa.free[o].append(end)
        if hi == 0:
            raise self.fail("a repeat of zero")
        return end

    def atom(self) -> tuple[int, int]:
        c = self.peek()
        if c == "(":
            self.i += 1
            if self.p.startswith("?:", self.i):
                self.i += 2
            elif self.peek() == "?":
                raise self.fail("a group extension")
            s, e = self.alternation()
            if self.peek() != ")":
                raise self.fail("an unclosed group")
            self.i += 1
            return s, e
        if c == "[":
            return self._edge(self.char_class())
        if c == "\\":
            if self.p[self.i + 1 : self.i + 2] != "d":
                raise self.fail("an escape other than \\d")
            self.i += 2
            return self._edge(ALL_DIGITS)
        if c.isdigit() and c.isascii():
            self.i += 1
            return self._edge(1 << int(c))
        raise self.fail(f"{c!r}")

    def _edge(self, mask: int) -> tuple[int, int]:
        s, e = self.nfa.state(), self.nfa.state()
        self.nfa.edges[s].append((mask, e))
        return s, e

    def char_class(self) -> int:
        self.i += 1
        if self.peek() == "^":
            raise self.fail("a negated class")
        mask = 0
        while self.peek() != "]":
            c = self.peek()
            if c == "\\" and self.p[self.i + 1 : self.i + 2] == "d":
                mask |= ALL_DIGITS
                self.i += 2
                continue
            if not (c.isdigit() and c.isascii()):
                raise self.fail(f"{c!r} in a class")
            lo = hi = int(c)
            self.i += 1
            if self.peek() == "-" and self.p[self.i + 1 : self.i + 2] != "]":
                end = self.p[self.i + 1 : self.i + 2]
                if not (end.isdigit() and end.isascii()):
                    raise self.fail("a range that is not of digits")
                hi = int(end)
                self.i += 2
            for d in range(lo, hi + 1):
                mask |= 1 << d
        self.i += 1
        return mask

    def quantifier(self) -> tuple[int, int]:
        c = self.peek()
        if c == "?":
            self.i += 1
            return 0, 1
        if c in ("*", "+"):
            raise self.fail("an unbounded repeat")
        if c != "{":
            return 1, 1
        close = self.p.find("}", self.i)
        if close < 0:
            raise self.fail("an unclosed repeat")
        body = self.p[self.i + 1 : close]
        lo_s, _, hi_s = body.partition(",")
        if not lo_s.isdigit() or (hi_s and not hi_s.isdigit()) or (body.endswith(",") and not hi_s):
            raise self.fail("a repeat that is not {n} or {n,m}")
        self.i = close + 1
        lo = int(lo_s)
        hi = int(hi_s) if hi_s else lo
        if hi < lo:
            raise self.fail("a repeat whose bounds are reversed")
        return lo, hi


class _Walk:
    """The automaton's state sets, one digit at a time, with what each set accepts memoised."""

    def __init__(self, pattern: str, prefix: bool) -> None:
        self.nfa, start, self.accept = _Parser(pattern).parse()
        self.prefix = prefix
        self.start = self.closure(frozenset((start,)), False)
        self._memo: dict[tuple[frozenset[int], int], int] = {}

    def closure(self, states: frozenset[int], end: bool) -> frozenset[int]:
        seen = set(states)
        todo = list(states)
        while todo:
            s = todo.pop()
            for t in self.nfa.free[s] + (self.nfa.at_end[s] if end else []):
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
        return frozenset(seen)

    def step(self, states: frozenset[int], digit: int) -> frozenset[int]:
        bit = 1 << digit
        nxt = frozenset(t for s in states for mask, t in self.nfa.edges[s] if mask & bit)
        return self.closure(nxt, False) if nxt else nxt

    def accepts_here(self, states: frozenset[int], rem: int) -> bool:
        return self.accept in self.closure(states, rem == 0)

    def status(self, states: frozenset[int], rem: int) -> int:
        """1: every `rem`-digit continuation matches; 0: none does; 2: some do."""
        key = (states, rem)
        got = self._memo.get(key)
        if got is not None:
            return got
        if not states:
            out = 0
        elif (self.prefix or rem == 0) and self.accepts_here(states, rem):
            out = 1
        elif rem == 0:
            out = 0
        else:
            kids = {self.status(self.step(states, d), rem - 1) for d in range(10)}
            out = kids.pop() if len(kids) == 1 else 2
        self._memo[key] = out
        return out

    def ranges(self, length: int) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []

        def emit(value: int, states: frozenset[int], rem: int) -> None:
            st = self.status(states, rem)
            if st == 1:
                lo, hi = value * 10**rem, (value + 1) * 10**rem
                if out and out[-1][1] == lo:
                    out[-1] = (out[-1][0], hi)
                else:
                    out.append((lo, hi))
            elif st == 2:
                for d in range(10):
                    emit(value * 10 + d, self.step(states, d), rem - 1)

        emit(0, self.start, length)
        return out


@lru_cache(maxsize=4096)
def _walk(pattern: str, prefix: bool) -> _Walk:
    return _Walk(pattern, prefix)


def ranges(pattern: str, length: int, *, prefix: bool = False) -> list[tuple[int, int]]:
    """The values of the `length`-digit strings that `pattern` fully matches (or, with `prefix`,
    that start with a match, as `re.match` would find), as sorted disjoint [lo, hi) ranges."""
    if length < 0:
        raise ValueError("a length cannot be negative")
    return _walk(pattern, prefix).ranges(length)
