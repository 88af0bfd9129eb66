"""Structured logs: one JSON object a line (or plain text), with the `extra` fields kept.

Secrets never reach a log: nothing here prints configuration, keys named like secrets are
masked if a caller passes them anyway, and so are values written after such a name in a
message or a traceback (`'Secret': '…'`, `secret=…`, an AMI header line `Secret: …`): a
library's line may quote the action it failed to send, the AMI login among them.

The libraries' warnings and errors (panoramisk, asyncpg, uvicorn) go through the same handler,
as JSON lines, instead of Python's last-resort handler, which wrote plain text in the caller's
thread.

A line is formatted where it is logged and written to stderr by a thread of its own. A sink that
stops taking lines (journald behind, a pipe nobody reads) then holds that thread, never the
event loop, so FastAGI answers (emergency calls among them) never wait on a log. Lines beyond
`ROOM` waiting are dropped and counted; the count is written as a line of its own when the sink
takes lines again, and `rating_log_lines_dropped_total` shows it.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import sys
import threading
import time
from typing import TextIO

ROOM = 10_000
"""Lines that may wait for the sink: ~3 MB at most; an engine logs a few lines a call in trouble."""
EXIT_WAIT = 5.0
"""Seconds a process's exit waits for its last lines to be written (`logging.shutdown` flushes
every handler at exit); a stalled sink must not keep it from exiting."""

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_SECRET_WORDS = ("secret", "password", "token")
_NAME = r"\w*(?:secret|password|token)\w*"
_SECRET_VALUES = (
    (re.compile(rf"""(?i)((['"]){_NAME}\2\s*:\s*)(['"]).*?\3"""), r"\1\3***\3"),  # 'Secret': 'x'
    (re.compile(rf"""(?i)(\b{_NAME}\s*=\s*)(?:(['"]).*?\2|[^\s&,;)]+)"""), r"\1***"),  # secret=x
    (re.compile(rf"(?im)^([ \t]*{_NAME}:[ \t]*)\S[^\r\n]*"), r"\1***"),  # Secret: x, a header line
)


def mask(text: str) -> str:
    """`text` with the values written after a secret's name replaced by ***."""
    for pattern, replacement in _SECRET_VALUES:
        text = pattern.sub(replacement, text)
    return text


def _extras(record: logging.LogRecord) -> dict[str, object]:
    """The `extra` fields, those named like secrets as ***; each formatter masks what the others quote."""
    return {
        key: "***" if any(w in key.lower() for w in _SECRET_WORDS) else value
        for key, value in vars(record).items()
        if key not in _STANDARD and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": mask(record.getMessage()),
            **{k: mask(v) if isinstance(v, str) else v for k, v in _extras(record).items()},
        }
        if record.exc_info:
            out["exc"] = mask(self.formatException(record.exc_info))
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={mask(str(v))}" for k, v in _extras(record).items())
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname.lower():7} {record.name}: {mask(record.getMessage())} {extras}".rstrip()
        return line + ("\n" + mask(self.formatException(record.exc_info)) if record.exc_info else "")


class OffLoopHandler(logging.Handler):
    """Formats a line where it is logged (its fields as they were then) and writes it from a thread
    of its own, so a sink that takes nothing holds that thread only."""

    def __init__(self, stream: TextIO, room: int = ROOM) -> None:
        super().__init__()
        self.stream = stream
        self.dropped_total = 0
        self._dropped = 0  # since the last note; under _counting
        # Not the handler's lock: `logging.shutdown` holds that while it flushes, and a writer
        # waiting on it then could not write the last lines the flush waits for.
        self._counting = threading.Lock()
        self._gave_up = False
        self._lines: queue.Queue[str | None] = queue.Queue(room)
        self._thread = threading.Thread(target=self._write, name="logs", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception as exc:  # a call with arguments its message does not take (a bug)
            line = self._unformatted(record, exc)
        try:
            self._lines.put_nowait(line)
        except queue.Full:
            with self._counting:
                self._dropped += 1
                self.dropped_total += 1

    def _unformatted(self, record: logging.LogRecord, exc: Exception) -> str:
        """A line in its place, through the same queue: `handleError` would print a traceback to
        stderr from the thread that logged, the event loop's."""
        where = f"{record.pathname}:{record.lineno}"
        return self._own_line(
            logging.ERROR, "a log line could not be formatted", source=where, from_logger=record.name, error=repr(exc)
        )

    def _write(self) -> None:
        while True:
            lines = [self._lines.get()]
            while lines[-1] is not None and len(lines) < 100:  # what waits goes in one write
                try:
                    lines.append(self._lines.get_nowait())
                except queue.Empty:
                    break
            with self._counting:
                dropped, self._dropped = self._dropped, 0
            text = "".join(line + "\n" for line in lines if line is not None)
            try:
                self.stream.write((self._note(dropped) + "\n" if dropped else "") + text)
                self.stream.flush()
            except Exception:  # a closed or broken stderr: nothing left to tell it
                pass
            finally:
                for _ in lines:
                    self._lines.task_done()
            if lines[-1] is None:
                return

    def _note(self, dropped: int) -> str:
        reason = "the log's sink took no lines while they came"
        return self._own_line(logging.WARNING, "log lines dropped", dropped=dropped, reason=reason)

    def _own_line(self, level: int, msg: str, **fields: object) -> str:
        """A line of this module's own, formatted as the others."""
        made = {"name": __name__, "levelno": level, "levelname": logging.getLevelName(level), "msg": msg}
        return self.format(logging.makeLogRecord({**made, **fields}))

    def flush(self, timeout: float = EXIT_WAIT) -> None:
        """Wait until the lines logged so far are written, or `timeout` seconds: once only for a
        sink that stays stalled (`logging.shutdown` flushes, then closes, which flushes again)."""
        deadline = time.monotonic() + (0 if self._gave_up else timeout)
        while self._lines.unfinished_tasks and self._thread.is_alive():
            if time.monotonic() >= deadline:
                self._gave_up = True
                return
            time.sleep(0.005)

    def close(self) -> None:
        self.flush()
        try:
            self._lines.put(None, timeout=0.1)
        except queue.Full:
            pass  # the sink is stalled: the thread is a daemon and ends with the process
        else:
            self._thread.join(0.1)
        super().close()


def setup(level: str = "info", fmt: str = "json", stream: TextIO | None = None, room: int = ROOM) -> OffLoopHandler:
    """Our lines from `level` up, the libraries' from warnings up, through one handler."""
    handler = OffLoopHandler(stream or sys.stderr, room)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in root.handlers:
        if isinstance(old, OffLoopHandler):  # a setup before this one's (tests): its thread ended
            old.close()
    root.handlers[:] = [handler]
    root.setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))
    ours = logging.getLogger("rating_engine")
    ours.handlers.clear()
    ours.setLevel(level.upper())
    ours.propagate = True
    return handler


def dropped_total() -> int:
    """Lines dropped since start because the sink took none (`rating_log_lines_dropped_total`)."""
    return sum(h.dropped_total for h in logging.getLogger().handlers if isinstance(h, OffLoopHandler))
