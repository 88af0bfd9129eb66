"""FastAGI framing, with no I/O: bytes in, frozen requests and replies out.

Asterisk opens one connection per AGI() call, sends `agi_name: value` lines ending with a
blank line, then reads commands and answers each with `200 result=…`, `510 …` (invalid
command), `511 …` (dead channel), or a multi-line `520-…` usage ending `520 End of proper
usage.`. Unless AGISIGHUP=no, it may write `HANGUP` on its own line at any point.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class AgiRequest:
    env: Mapping[str, str]
    args: tuple[str, ...] = ()

    @property
    def script(self) -> str:
        """The route: `agi_network_script` without any `?query`."""
        return self.env.get("agi_network_script", "").split("?", 1)[0]

    @property
    def uniqueid(self) -> str:
        return self.env.get("agi_uniqueid", "")

    def arg(self, n: int) -> str:
        """AGI argument n (1-based), '' when absent."""
        return self.args[n - 1] if 0 < n <= len(self.args) else ""


class AgiProtocolError(ValueError):
    """Bytes that are not an AGI environment."""


MAX_ENV_BYTES = 16_384


def parse_env(block: bytes) -> AgiRequest:
    """Parse the environment block (without the final blank line)."""
    env: dict[str, str] = {}
    # decoded once: "\n" is never inside a UTF-8 sequence, so this is the lines decoded one by one
    for line in block.decode("utf-8", "replace").split("\n"):
        line = line.rstrip("\r")
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.startswith("agi_"):
            raise AgiProtocolError(f"not an AGI environment line: {line[:60]!r}")
        env[name.strip()] = value[1:] if value.startswith(" ") else value
    if "agi_network_script" not in env and "agi_request" not in env:
        raise AgiProtocolError("AGI environment without agi_request")
    args: list[str] = []
    n = 1
    while f"agi_arg_{n}" in env:
        args.append(env[f"agi_arg_{n}"])
        n += 1
    return AgiRequest(MappingProxyType(env), tuple(args))


def quote(value: str) -> str:
    """Quote a value for an AGI command: `"` and `\\` escaped, newlines removed."""
    cleaned = value.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")
    return f'"{cleaned}"'


def unquote(text: str) -> str:
    """The value a quoted AGI argument stands for (the inverse of `quote`, as Asterisk reads it)."""
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    out, escaped = [], False
    for ch in text:
        if escaped or ch != "\\":
            out.append(ch)
            escaped = False
        else:
            escaped = True
    return "".join(out)


_NAMES_CHECKED: set[str] = set()
"""The engine sets a handful of names: each is checked once, not at every call."""


def set_variable(name: str, value: str) -> bytes:
    if name not in _NAMES_CHECKED:
        if not name or not all(c.isalnum() or c == "_" for c in name):
            raise ValueError(f"not a channel variable name: {name!r}")
        if len(_NAMES_CHECKED) < 1024:
            _NAMES_CHECKED.add(name)
    return f"SET VARIABLE {name} {quote(value)}\n".encode()


def read_set_variable(command: str) -> tuple[str, str] | None:
    """(name, value) of a `SET VARIABLE` command as Asterisk reads it (the inverse of
    `set_variable`); None for any other command."""
    if not command.startswith("SET VARIABLE "):
        return None
    name, _, value = command.removeprefix("SET VARIABLE ").partition(" ")
    return name, unquote(value)


@dataclass(frozen=True, slots=True)
class AgiReply:
    code: int
    result: str = ""
    text: str = ""
    hangup_seen: bool = False

    @property
    def ok(self) -> bool:
        return self.code == 200

    @property
    def dead(self) -> bool:
        return self.code == 511 or self.hangup_seen


@dataclass(slots=True)
class ReplyReader:
    """Turns reply lines into replies; a `HANGUP` line is remembered, not taken as a reply."""

    hangup_seen: bool = False
    _usage: list[str] = field(default_factory=list)

    def feed(self, line: str) -> AgiReply | None:
        line = line.rstrip("\r\n")
        if line == "HANGUP":
            self.hangup_seen = True
            return None
        if self._usage or line.startswith("520-"):
            self._usage.append(line)
            if line.startswith("520 "):
                text = "\n".join(self._usage)
                self._usage = []
                return AgiReply(520, "", text, self.hangup_seen)
            return None
        code_text, _, rest = line.partition(" ")
        if not (code_text.isascii() and code_text.isdigit()) or len(code_text) > 3:
            return None  # noise ("²" is a digit to str.isdigit): ignore rather than get out of step
        result = ""
        if rest.startswith("result="):
            result = rest[len("result=") :].split(" ", 1)[0]
        return AgiReply(int(code_text), result, rest, self.hangup_seen)
