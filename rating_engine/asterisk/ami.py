"""AMI framing, with no I/O: `Key: Value\\r\\n` lines, a blank line ends a message.

Used by the simulator (the server side) and the tests; the live client is panoramisk.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
Message = dict[str, str]


class AmiParser:
    """Feed bytes, get complete messages; the greeting line comes out as {"Banner": …}."""

    def __init__(self, expect_banner: bool = False) -> None:
        self.buffer = bytearray()
        self.expect_banner = expect_banner

    def feed(self, data: bytes) -> list[Message]:
        self.buffer += data
        out: list[Message] = []
        if self.expect_banner:
            nl = self.buffer.find(b"\r\n")
            if nl < 0:
                return out
            out.append({"Banner": self.buffer[:nl].decode("utf-8", "replace")})
            del self.buffer[: nl + 2]
            self.expect_banner = False
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return out
            block = self.buffer[:end].decode("utf-8", "replace")
            del self.buffer[: end + 4]
            msg: Message = {}
            for line in block.split("\r\n"):
                key, sep, value = line.partition(":")
                if sep:
                    msg.setdefault(key.strip(), value[1:] if value.startswith(" ") else value)
            if msg:
                out.append(msg)


def format_message(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> bytes:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return b"".join(f"{k}: {v}\r\n".encode() for k, v in items) + b"\r\n"
