"""Structured logs: one JSON object a line (or plain text), with the `extra` fields kept.

Secrets never reach a log: nothing here prints configuration, and keys named like secrets
are masked if a caller passes them anyway.
"""

from __future__ import annotations

import json
import logging
import time

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_SECRET_WORDS = ("secret", "password", "token")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = "***" if any(w in key.lower() for w in _SECRET_WORDS) else value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={'***' if any(w in k.lower() for w in _SECRET_WORDS) else v}"
            for k, v in vars(record).items()
            if k not in _STANDARD and not k.startswith("_")
        )
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname.lower():7} {record.name}: {record.getMessage()} {extras}".rstrip()
        return line + ("\n" + self.formatException(record.exc_info) if record.exc_info else "")


def setup(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("rating_engine")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
