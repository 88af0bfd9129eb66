"""The compiled number table on disk, one file per phonenumbers version and compiler version.

Compiling takes a few seconds; an engine restarting (or `rating-engine rate` run from cron) reads
the file instead, in milliseconds. The file's name carries both versions, so upgrading
phonenumbers (new ranges, new countries) builds a new table from the new metadata on the next
start: the table is never edited by hand, and an old one is never used with new metadata. A
file that cannot be read (truncated, another format) is rebuilt; a cache directory that cannot
be written only costs the compile on each start.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import phonenumbers

from . import number_table
from .number_table import MAX_DIGITS, NumberClass, NumberTable

log = logging.getLogger("rating_engine.numbers")


def default_dir() -> Path:
    """$XDG_CACHE_HOME/rating-engine, else ~/.cache/rating-engine (a service user without a home:
    the system's temporary directory)."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except (RuntimeError, KeyError):
            base = tempfile.gettempdir()
    return Path(base) / "rating-engine"


def file_name() -> str:
    return f"numbers-phonenumbers-{phonenumbers.__version__}-v{number_table.VERSION}.npz"


def save(t: NumberTable, path: Path) -> None:
    """Written to a temporary file and renamed: a reader never sees half a table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    classes = json.dumps([[c.region, c.kind, c.reason] for c in t.classes])
    arrays: dict[str, Any] = {f"starts_{n}": t.starts[n] for n in range(MAX_DIGITS + 1)}
    arrays |= {f"ids_{n}": t.ids[n] for n in range(MAX_DIGITS + 1)}
    arrays["classes"] = np.array(classes)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".numbers-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read(path: Path) -> NumberTable:
    with np.load(path, allow_pickle=False) as data:
        classes = [NumberClass(str(r), int(k), str(why)) for r, k, why in json.loads(str(data["classes"]))]
        starts = [data[f"starts_{n}"] for n in range(MAX_DIGITS + 1)]
        ids = [data[f"ids_{n}"] for n in range(MAX_DIGITS + 1)]
    if any(len(s) != len(i) for s, i in zip(starts, ids, strict=True)) or any(
        int(i.max(initial=-1)) >= len(classes) for i in ids
    ):
        raise ValueError("the columns do not fit together")
    return NumberTable(classes, starts, ids)


def load(directory: Path | None = None) -> NumberTable:
    """The table for this phonenumbers: read from the cache, else built (and stored if possible),
    and what the build left behind taken out of the collector's passes."""
    path = (directory or default_dir()) / file_name()
    try:
        return read(path)
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        log.warning("number table cache unreadable, rebuilding", extra={"path": str(path), "error": str(exc)})
    t = number_table.build()
    # Building read every region's metadata, and phonenumbers keeps it for the process's life:
    # ~390,000 objects that each full pass of the cyclic collector would walk (30 ms on this
    # machine, the event loop stopped), where a table read from its file leaves ~1,600. Frozen,
    # the passes skip them; a process that reads the file has nothing of the kind to freeze.
    gc.freeze()
    try:
        save(t, path)
    except OSError as exc:
        log.warning("number table cache not written", extra={"path": str(path), "error": exc.strerror or str(exc)})
    return t


def install(directory: Path | None = None) -> NumberTable:
    """Load (or build) the table and make it the one classification uses."""
    t = load(directory)
    number_table.install(t)
    return t
