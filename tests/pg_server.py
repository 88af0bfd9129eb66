"""A PostgreSQL server of the test's own, to stop and start while engines use it: `initdb` in a
temporary directory, on a free port of 127.0.0.1, trust auth, run by the `postgres` user when the
tests run as root (the server refuses root). Where the server's programs are missing it skips and
says why; under CI it fails instead, for these tests must run there."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .engine_process import free_port


def _bindir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


class Server:
    def __init__(self, bindir: Path, data: Path, port: int, user: list[str]) -> None:
        self.bindir, self.data, self.port, self.user = bindir, data, port, user
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _run(self, program: str, *args: str) -> None:
        subprocess.run([*self.user, str(self.bindir / program), *args], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.data / "log"), "-o", options, "-w", "start")

    def stop(self) -> None:
        """As a restart or a failover does: every connection is cut, new ones are refused."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")


@contextmanager
def private_postgres() -> Iterator[Server]:
    bindir = _bindir()
    if bindir is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run the PostgreSQL restart tests: initdb is missing (apt-get install postgresql)")
        pytest.skip("no PostgreSQL server programs (initdb) here: the restart tests did not run")
    user: list[str] = []
    root = tempfile.mkdtemp(prefix="rating-engine-pg-")
    data = Path(root) / "data"
    data.mkdir()
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        for d in (root, data):
            os.chown(d, pw.pw_uid, pw.pw_gid)
        user = ["runuser", "-u", "postgres", "--"]
    server = Server(bindir, data, free_port(), user)
    try:
        server._run("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync")
        server.start()
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
