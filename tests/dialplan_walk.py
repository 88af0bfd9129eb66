"""A small model of Asterisk running one extension of a dialplan: enough to follow the shipped one.

It substitutes `${VAR}`, `${IF(…)}`, `${CALLERID(num)}`, `${CDR(accountcode)}` and `$[…]`
expressions (`=`, `!=`, `&`, `|`) from the inside out, as Asterisk does, and runs NoOp, Log,
Set, ExecIf, GotoIf, Goto, AGI, Playback, Dial and Hangup. A jump to a target that does not
exist ends the walk as Asterisk ends the call: "sent to invalid extension".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from rating_engine.asterisk.dialplan import Dialplan, Step, _split_app, _split_args

Agi = Callable[[dict[str, str]], dict[str, str] | None]


@dataclass
class Walk:
    outcome: str  # "dial", "hangup", "invalid", "return", "end"
    detail: str
    variables: dict[str, str]
    played: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)


def _close(text: str, start: int, open_ch: str, close_ch: str) -> int:
    depth = 0
    for i in range(start, len(text)):
        if text[i] == open_ch:
            depth += 1
        elif text[i] == close_ch:
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unbalanced {open_ch} in {text!r}")


def substitute(text: str, v: dict[str, str]) -> str:
    out, i = [], 0
    while i < len(text):
        if text.startswith("${", i):
            end = _close(text, i + 1, "{", "}")
            out.append(_value(substitute(text[i + 2 : end], v), v))
            i = end + 1
        elif text.startswith("$[", i):
            end = _close(text, i + 1, "[", "]")
            out.append(evaluate(substitute(text[i + 2 : end], v)))
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _value(name: str, v: dict[str, str]) -> str:
    if name.startswith("IF(") and name.endswith(")"):
        cond, _, rest = name[3:-1].partition("?")
        yes, _, no = rest.partition(":")
        return yes if _true(cond) else no
    if name in ("CALLERID(num)", "CDR(accountcode)"):
        return v.get(name, "")
    return v.get(name, "")


def _true(value: str) -> bool:
    return value.strip() not in ("", "0")


def _tokens(expr: str) -> list[str]:
    out, i = [], 0
    while i < len(expr):
        ch = expr[i]
        if ch.isspace():
            i += 1
        elif ch == '"':
            end = expr.index('"', i + 1)
            out.append(expr[i : end + 1])
            i = end + 1
        elif expr.startswith("!=", i):
            out.append("!=")
            i += 2
        elif ch in "=&|":
            out.append(ch)
            i += 1
        else:
            j = i
            while j < len(expr) and not expr[j].isspace() and expr[j] not in '="&|!':
                j += 1
            out.append(expr[i:j])
            i = j
    return out


def evaluate(expr: str) -> str:
    """`$[…]` with the operators the shipped dialplan uses; precedence: comparisons, &, |."""
    tokens = _tokens(expr)

    def atom(t: str) -> str:
        return t[1:-1] if t.startswith('"') else t

    def comparison(ts: list[str]) -> str:
        if len(ts) == 3 and ts[1] in ("=", "!="):
            equal = atom(ts[0]) == atom(ts[2])
            return "1" if equal == (ts[1] == "=") else "0"
        if len(ts) == 1:
            return atom(ts[0])
        raise ValueError(f"unsupported expression {expr!r}")

    def split(ts: list[str], op: str) -> list[list[str]]:
        parts: list[list[str]] = [[]]
        for t in ts:
            if t == op:
                parts.append([])
            else:
                parts[-1].append(t)
        return parts

    ors = []
    for or_part in split(tokens, "|"):
        ands = [_true(comparison(p)) for p in split(or_part, "&")]
        ors.append(all(ands))
    return "1" if any(ors) else "0"


def walk(plan: Dialplan, context: str, exten: str, variables: dict[str, str], agi: Agi) -> Walk:
    v = {"EXTEN": exten, **variables}
    steps = plan.find_extension(context, exten)
    if steps is None:
        return Walk("invalid", f"{context},{exten},1", v)
    prio = 1
    result = Walk("end", "", v)
    for _ in range(200):
        step = next((s for s in steps if s.number == prio), None)
        if step is None:
            result.outcome, result.detail = "end", f"no priority {prio}"
            return result
        result.lines.append(step.line)
        jump = _run(step, v, agi, result)
        if result.outcome != "end":
            return result
        if jump is None:
            prio += 1
            continue
        target = _resolve(plan, step, jump)
        if target is None:
            result.outcome, result.detail = "invalid", jump
            return result
        steps, prio = target
    raise AssertionError("the walk did not end")


def _run(step: Step, v: dict[str, str], agi: Agi, result: Walk) -> str | None:
    app, data = step.app, step.data
    if app == "ExecIf":
        data = substitute(data, v)
        cond, _, inner = data.partition("?")
        if "(" in inner:  # the true branch is app(args): up to its closing parenthesis
            inner = inner[: _close(inner, inner.index("("), "(", ")") + 1]
        if not _true(cond):
            return None
        app, data = _split_app(inner)
        return _apply(app, data, v, agi, result, substituted=True)
    return _apply(app, data, v, agi, result, substituted=False)


def _apply(app: str, data: str, v: dict[str, str], agi: Agi, result: Walk, *, substituted: bool) -> str | None:
    text = data if substituted else substitute(data, v)
    if app in ("NoOp", "Log"):
        return None
    if app == "Set":
        name, _, value = text.partition("=")
        v[name.lstrip("_")] = value
        return None
    if app == "Playback":
        result.played.append(text)
        return None
    if app == "AGI":
        answered = agi(dict(v))
        v["AGISTATUS"] = "FAILURE" if answered is None else "SUCCESS"
        v.update(answered or {})
        return None
    if app == "Dial":
        result.outcome, result.detail = "dial", text
        return None
    if app == "Hangup":
        result.outcome, result.detail = "hangup", text
        return None
    if app == "Return":
        result.outcome, result.detail = "return", ""
        return None
    if app == "Goto":
        return text
    if app == "GotoIf":
        cond, _, branches = text.partition("?")
        yes, _, no = branches.partition(":")
        target = yes if _true(cond) else no
        return target or None
    raise AssertionError(f"the walker does not know {app}()")


def _resolve(plan: Dialplan, step: Step, target: str) -> tuple[list[Step], int] | None:
    parts = _split_args(target)
    if len(parts) == 1:
        context, exten, prio = step.context, step.exten, parts[0]
    elif len(parts) == 2:
        context, exten, prio = step.context, parts[0], parts[1]
    else:
        context, exten, prio = parts
    steps = plan.contexts.get(context, {}).get(exten) if exten == step.exten else plan.find_extension(context, exten)
    if steps is None:
        return None
    if prio.isdigit():
        return (steps, int(prio)) if any(s.number == int(prio) for s in steps) else None
    labelled = next((s for s in steps if s.label == prio), None)
    return None if labelled is None else (steps, labelled.number)
