"""Read an `extensions.conf` and check what Asterisk only finds out while a call runs.

Pure: text in, problems (with file and line) out. Asterisk loads a dialplan whose `Goto`
points nowhere without a word; the call that takes that branch is hung up ("sent to invalid
extension but no invalid handler"). On the engine-unreachable branch that call may be an
emergency call, so the shipped dialplan is held to these checks by the tests, and an
operator can run them on theirs (`rating-engine dialplan check`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from phonenumbers import PhoneMetadata, shortnumberinfo

from ..contract import VARIABLES

JUMPS = ("Goto", "GotoIf", "Gosub", "GosubIf")


@dataclass(frozen=True, slots=True)
class Step:
    """One priority of one extension."""

    context: str
    exten: str
    number: int
    label: str
    app: str
    data: str
    line: int


@dataclass(slots=True)
class Dialplan:
    source: str
    contexts: dict[str, dict[str, list[Step]]] = field(default_factory=dict)
    includes: dict[str, list[str]] = field(default_factory=dict)
    globals: dict[str, str] = field(default_factory=dict)

    def steps(self) -> Iterable[Step]:
        for extens in self.contexts.values():
            for steps in extens.values():
                yield from steps

    def find_extension(self, context: str, exten: str, seen: frozenset[str] = frozenset()) -> list[Step] | None:
        """The steps `exten` runs in `context` (literal first, then patterns, then includes)."""
        extens = self.contexts.get(context)
        if extens is None or context in seen:
            return None
        if exten in extens:
            return extens[exten]
        for name, steps in extens.items():
            if name.startswith("_") and pattern_matches(name, exten):
                return steps
        for inc in self.includes.get(context, []):
            found = self.find_extension(inc, exten, seen | {context})
            if found is not None:
                return found
        return None


@dataclass(frozen=True, slots=True)
class Problem:
    source: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.message}"


_LINE = re.compile(r"^\s*(exten|same)\s*=>?\s*(.*)$")
_PRIORITY = re.compile(r"^(\d+|n|hint)(?:\(([A-Za-z0-9_-]+)\))?$")


def _strip_comment(line: str) -> str:
    out = []
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line):
            out.append(line[i : i + 2])
            i += 2
            continue
        if ch == ";":
            break
        out.append(ch)
        i += 1
    return "".join(out).rstrip()


def _split_app(text: str) -> tuple[str, str]:
    name, paren, rest = text.partition("(")
    if not paren:
        return name.strip(), ""
    return name.strip(), rest[: rest.rfind(")")] if ")" in rest else rest


def parse(text: str, source: str = "extensions.conf") -> Dialplan:
    plan = Dialplan(source)
    context = ""
    exten = ""
    previous = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = _strip_comment(raw)
        if not line.strip():
            continue
        stripped = line.strip()
        if stripped.startswith("[") and "]" in stripped:
            context = stripped[1 : stripped.index("]")]
            plan.contexts.setdefault(context, {}) if context not in ("general", "globals") else None
            exten, previous = "", 0
            continue
        if context == "globals":
            key, sep, value = stripped.partition("=")
            if sep:
                plan.globals[key.strip()] = value.strip()
            continue
        if context in ("general", ""):
            continue
        m = _LINE.match(line)
        if m is None:
            key, sep, value = stripped.partition("=>")
            if sep and key.strip() == "include":
                plan.includes.setdefault(context, []).append(value.strip())
            continue
        kind, rest = m.groups()
        if kind == "exten":
            name, _, rest = rest.partition(",")
            exten = name.strip()
        elif not exten:
            continue
        prio, _, call = rest.partition(",")
        pm = _PRIORITY.match(prio.strip())
        if pm is None:
            continue
        number_text, label = pm.groups()
        if number_text == "hint":
            continue
        number = previous + 1 if number_text == "n" else int(number_text)
        previous = number
        app, data = _split_app(call)
        steps = plan.contexts[context].setdefault(exten, [])
        steps.append(Step(context, exten, number, label or "", app, data, lineno))
    return plan


@lru_cache(maxsize=256)
def _pattern(name: str) -> re.Pattern[str]:
    out = []
    i = 1
    while i < len(name):
        ch = name[i]
        if ch == "X":
            out.append("[0-9]")
        elif ch == "Z":
            out.append("[1-9]")
        elif ch == "N":
            out.append("[2-9]")
        elif ch == ".":
            out.append(".+")
        elif ch == "!":
            out.append(".*")
        elif ch == "[":
            end = name.find("]", i)
            out.append("[" + name[i + 1 : end] + "]")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out))


def pattern_matches(pattern: str, exten: str) -> bool:
    """Whether an Asterisk extension pattern (`_X.`, `_0[1-9]XXXXXXXX`, …) matches `exten`."""
    return _pattern(pattern).fullmatch(exten) is not None


# ---------------------------------------------------------------- jump targets


def _split_args(data: str) -> list[str]:
    """Split application arguments on commas outside ${…}, $[…] and (…)."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in data:
        if ch in "{[(":
            depth += 1
        elif ch in "}])":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def _branches(app: str, data: str) -> list[str]:
    """The jump targets an application names (each `[[context,]exten,]priority`)."""
    if app in ("Goto", "Gosub"):
        return [data]
    # GotoIf(cond?true:false): the condition is everything up to the last '?' outside brackets.
    depth, cut = 0, -1
    for i, ch in enumerate(data):
        if ch in "{[(":
            depth += 1
        elif ch in "}])":
            depth -= 1
        elif ch == "?" and depth == 0:
            cut = i
    if cut < 0:
        return []
    true, _, false = data[cut + 1 :].partition(":")
    return [t for t in (true.strip(), false.strip()) if t]


def _jumps(step: Step) -> list[tuple[str, str]]:
    """(application, target) for every jump a step may take, ExecIf's included."""
    app, data = step.app, step.data
    if app == "ExecIf":
        _, _, inner = data.partition("?")
        inner = inner.split(":", 1)[0]
        app, data = _split_app(inner)
    if app not in JUMPS:
        return []
    return [(app, t) for t in _branches(app, data)]


def _check_target(plan: Dialplan, step: Step, app: str, target: str) -> str | None:
    if app.startswith("Gosub"):
        target = target.split("(", 1)[0]
    parts = _split_args(target)
    if len(parts) > 3 or not all(parts):
        return f"{app}({target}): not [[context,]extension,]priority"
    if len(parts) == 1:
        context, exten, prio = step.context, step.exten, parts[0]
    elif len(parts) == 2:
        context, exten, prio = step.context, parts[0], parts[1]
    else:
        context, exten, prio = parts
    if "${" in context or "$[" in context:
        return None
    if context not in plan.contexts:
        return f"{app}({target}): no context [{context}]"
    if exten == "${EXTEN}":
        exten = step.exten
    if "${" in exten or "$[" in exten:
        return None
    found = plan.find_extension(context, exten) if not exten.startswith("_") else plan.contexts[context].get(exten)
    if found is None:
        hint = ""
        if len(parts) == 2 and any(s.label == exten for s in plan.contexts[step.context].get(step.exten, [])):
            hint = f" ({exten!r} is a label of this extension: write {app}({exten}))"
        return f"{app}({target}): no extension {exten!r} in [{context}]{hint}"
    if "${" in prio:
        return None
    if prio.isdigit():
        if not any(s.number == int(prio) for s in found):
            return f"{app}({target}): extension {exten!r} has no priority {prio}"
    elif not any(s.label == prio for s in found):
        return f"{app}({target}): no label {prio!r} in extension {exten!r} of [{context}]"
    return None


# ---------------------------------------------------------------- the engine's contract


def _agi_steps(plan: Dialplan) -> list[Step]:
    return [s for s in plan.steps() if s.app == "AGI" and ("RATING_AGI" in s.data or "agi://" in s.data)]


def _emergency_condition(plan: Dialplan) -> tuple[Step, set[str]] | None:
    """The fail-closed branch's test of emergency numbers: the GotoIf that jumps to `emergency`."""
    for s in plan.steps():
        if s.app == "GotoIf" and "emergency" in _branches(s.app, s.data):
            return s, set(re.findall(r'"\$\{EXTEN\}"\s*=\s*"([0-9*#+]+)"', s.data))
    return None


@lru_cache(maxsize=64)
def emergency_numbers(country: str) -> tuple[str, ...]:
    """Every number `phonenumbers` (and so the engine) treats as emergency in `country`.

    Enumerated from the region's short-number metadata, over its possible lengths.
    """
    meta = PhoneMetadata.short_metadata_for_region(country.upper())
    if meta is None or meta.emergency is None:
        return ()
    general = meta.general_desc.possible_length if meta.general_desc is not None else None
    lengths = meta.emergency.possible_length or general or (2, 3)
    found = [
        digits
        for length in lengths
        for i in range(10**length)
        if shortnumberinfo.is_emergency_number(digits := str(i).zfill(length), country.upper())
    ]
    return tuple(sorted(found, key=lambda d: (len(d), d)))


def emergency_condition(country: str) -> str:
    """The GotoIf condition that recognises `country`'s emergency numbers, for the dialplan."""
    return " | ".join(f'"${{EXTEN}}" = "{n}"' for n in emergency_numbers(country))


def check(plan: Dialplan, country: str | None = None) -> list[Problem]:
    """Every problem found; `country`: also hold the emergency list to the engine's."""
    problems: list[Problem] = []

    def fail(step: Step, message: str) -> None:
        problems.append(Problem(plan.source, step.line, message))

    for step in plan.steps():
        for app, target in _jumps(step):
            message = _check_target(plan, step, app, target)
            if message is not None:
                fail(step, message)
        if step.app == "Dial":
            for opt in re.findall(r"\b([LS])\(([^)]*)\)", step.data):
                if "${" in opt[1] or not opt[1].strip():
                    fail(step, f"Dial option {opt[0]}({opt[1]}): an empty value means no limit")
            for routine in re.findall(r"\bU\(([^)^]*)", step.data):
                if "${" not in routine and plan.find_extension(routine, "s") is None:
                    fail(step, f"Dial option U({routine}…): no context [{routine}] with extension s")
        if "TIMEOUT(absolute)=${" in step.data:
            var = step.data.split("TIMEOUT(absolute)=${", 1)[1].split("}", 1)[0]
            guarded = step.app == "ExecIf" and f'"${{{var}}}" != ""' in step.data.split("?", 1)[0]
            if not guarded:
                fail(step, f"TIMEOUT(absolute) from ${{{var}}} without checking it is not empty")
    for agi in _agi_steps(plan):
        steps = plan.contexts[agi.context][agi.exten]
        before = [s for s in steps if s.number < agi.number]
        for name in VARIABLES:
            if not any(s.app == "Set" and s.data.replace(" ", "") == f"{name}=" for s in before):
                fail(agi, f"{name} is not cleared before AGI(): a value left from before would be trusted")
    if country is not None:
        found = _emergency_condition(plan)
        expected = set(emergency_numbers(country))
        if found is None:
            problems.append(Problem(plan.source, 0, "no GotoIf(…?emergency) for the engine-unreachable branch"))
        elif found[1] != expected:
            missing, extra = sorted(expected - found[1]), sorted(found[1] - expected)
            fail(
                found[0],
                f"emergency numbers for {country.upper()} differ from the engine's:"
                f" missing {', '.join(missing) or '-'}; not emergency there {', '.join(extra) or '-'}",
            )
    return problems
