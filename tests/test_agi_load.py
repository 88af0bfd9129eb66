"""bench_authorize's C load generator plays Asterisk exactly as the Python one does: the same
environment for each request, `200 result=1` to each command, one connection per request. Checked
over real sockets against a server that records both sides of every conversation."""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks import bench_authorize as B

COMMANDS = [f'SET VARIABLE RATING_{k} "{k}"\n'.encode() for k in range(6)]


@pytest.fixture(scope="module")
def agi_load() -> Iterator[Path]:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc): bench_authorize runs its Python generator")
    with tempfile.TemporaryDirectory() as d:
        binary = B.build_generator(d)
        assert binary is not None
        yield binary


class Recorder:
    """A FastAGI server that sends six SET VARIABLEs, one per reply, then closes; it keeps, per
    request, the environment it got and the replies."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[bytes, list[bytes]]] = {}

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        env = await reader.readuntil(b"\n\n")
        replies = []
        for command in COMMANDS:
            writer.write(command)
            replies.append(await reader.readline())
        uniqueid = next(line for line in env.split(b"\n") if line.startswith(b"agi_uniqueid: "))
        self.seen[uniqueid.decode()] = (env, replies)
        writer.close()


async def conversations(run: str, binary: Path, concurrency: int, requests: int, offset: int) -> Recorder:
    recorder = Recorder()
    server = await asyncio.start_server(recorder.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        if run == "python":
            await asyncio.gather(*(B._call(port, offset + i) for i in range(requests)))
        else:
            load = await B.c_load(binary, port, concurrency, requests, offset)
            assert load.failed == 0 and len(load.latencies) == requests
            assert all(lat > 0 for lat in load.latencies)
            if concurrency < 0:  # open loop: started at or after its due time, answered after that
                assert load.late is not None and all(
                    0 <= late < lat for late, lat in zip(load.late, load.latencies, strict=True)
                )
            else:
                assert load.late is None
    return recorder


@pytest.mark.parametrize("concurrency", [1, 7, -2000])
def test_the_c_generator_says_and_answers_what_the_python_one_does(agi_load: Path, concurrency: int) -> None:
    python = asyncio.run(conversations("python", agi_load, 0, 25, 9990))
    c = asyncio.run(conversations("c", agi_load, concurrency, 25, 9990))
    assert len(c.seen) == 25  # every request its own connection, its own uniqueid
    assert c.seen == python.seen
    env, replies = c.seen["agi_uniqueid: 1795535109.9990"]
    assert env == B._env(9990) and replies == [b"200 result=1\n"] * len(COMMANDS)


def test_a_port_nobody_listens_on_fails_every_request_and_says_so(agi_load: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        load = asyncio.run(B.c_load(agi_load, port, 3, 5, 0))
        assert (load.failed, load.latencies) == (5, [])
        with pytest.raises(RuntimeError, match="no request answered"):
            asyncio.run(B.measure(port, 3, 5, 0, server=None, generator=agi_load))


@pytest.mark.parametrize("concurrency", [4, -1000])
def test_measure_runs_either_generator_and_says_which(agi_load: Path, concurrency: int) -> None:
    async def both() -> list[dict[str, Any]]:
        recorder = Recorder()
        server = await asyncio.start_server(recorder.serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return [
                await B.measure(port, concurrency, 30, 100 * k, server=None, generator=g)
                for k, g in enumerate((None, agi_load))
            ]

    python, c = asyncio.run(both())
    assert (python["generator"], c["generator"]) == (B.PYTHON, B.C)
    for m in (python, c):
        assert m["failed"] == 0 and m["per_s"] > 0 and m["server_cpu_us"] is None
        assert m["generator_timer"] == (None if concurrency > 0 else "timerfd")
