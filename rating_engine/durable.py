"""Files that outlive a crash of the machine: a file's fsync makes its bytes durable, not its name
in its directory. What the ledger's SQLite file and the engine's spool are made in, and made as."""

from __future__ import annotations

import errno
import os
from pathlib import Path


def sync_dir(directory: Path) -> None:
    """Make the names in `directory` durable (a file made, a rename). A file system that cannot sync
    a directory (EINVAL: some network and FUSE ones) is let be, as SQLite lets it be: its names are
    as durable as it makes them, and the engine must still start there."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)


def make_dirs(directory: Path) -> None:
    """`directory` and its missing parents, each 0700 (balances and dialed numbers are nobody
    else's business) and each new name durable."""
    missing = [p for p in (directory, *directory.parents) if not p.exists()]
    for made in reversed(missing):
        made.mkdir(mode=0o700, exist_ok=True)
        sync_dir(made.parent)
