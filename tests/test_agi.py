"""FastAGI: framing from tables (no sockets), then the server over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rating_engine.asterisk.agi import (
    AgiProtocolError,
    ReplyReader,
    parse_env,
    quote,
    read_set_variable,
    set_variable,
    unquote,
)
from rating_engine.asterisk.agi_server import FastAgiServer
from rating_engine.contract import VARIABLES

from .asterisk_helpers import agi_request, agi_transcript, engine_rig, verdict

ENV = [
    "agi_network: yes",
    "agi_network_script: authorize?x=1",
    "agi_request: agi://127.0.0.1:4573/authorize",
    "agi_uniqueid: 1.2",
    "agi_arg_1: 201",
    "agi_arg_2: 0899123456",
]


def test_environment_parses_into_a_request_with_its_arguments() -> None:
    req = parse_env("\n".join(ENV).encode())
    assert (req.script, req.uniqueid, req.args, req.arg(2), req.arg(9)) == (
        "authorize",
        "1.2",
        ("201", "0899123456"),
        "0899123456",
        "",
    )


@pytest.mark.parametrize("block", [b"hello world", b"GET / HTTP/1.1\r\nHost: x", b"agi_uniqueid: 1"])
def test_what_is_not_an_agi_environment_is_refused(block: bytes) -> None:
    with pytest.raises(AgiProtocolError):
        parse_env(block)


@pytest.mark.parametrize(
    ("value", "quoted"), [("ALLOW", '"ALLOW"'), ('a"b', '"a\\"b"'), ("c:\\x", '"c:\\\\x"'), ("l1\nl2", '"l1 l2"')]
)
def test_values_are_quoted_for_set_variable(value: str, quoted: str) -> None:
    assert quote(value) == quoted
    assert set_variable("RATING_STATUS", value) == f"SET VARIABLE RATING_STATUS {quoted}\n".encode()


def test_variable_names_are_checked() -> None:
    with pytest.raises(ValueError):
        set_variable("BAD NAME", "x")


def test_reply_reader_handles_hangup_and_multiline_usage() -> None:
    r = ReplyReader()
    assert r.feed("200 result=1") is not None
    assert r.feed("HANGUP") is None and r.hangup_seen
    reply = r.feed("200 result=1")
    assert reply is not None and reply.dead
    r2 = ReplyReader()
    assert r2.feed("520-Invalid command syntax.  Proper usage follows:") is None
    assert r2.feed("Usage: SET VARIABLE <variablename> <value>") is None
    usage = r2.feed("520 End of proper usage.")
    assert usage is not None and usage.code == 520 and "Usage" in usage.text
    dead = ReplyReader().feed("511 Command Not Permitted on a dead channel or intercept routine")
    assert dead is not None and dead.dead


@pytest.mark.parametrize("name", ["answered_callee_hangs_up", "denied_by_engine", "phone_like_answered"])
async def test_recorded_asterisk_requests_get_the_contract_variables(tmp_path: Path, name: str) -> None:
    env, _, replies = agi_transcript(name)
    assert replies and all(r == "200 result=1" for r in replies)
    async with engine_rig(tmp_path) as rig:
        commands = await agi_request(rig.port, env)
    names = [c.split(" ")[2] for c in commands]
    assert names == [  # the status last: an engine killed midway leaves none (see test_dialplan)
        "RATING_REASON",
        "RATING_E164",
        "RATING_GUARDSEC",
        "RATING_QUOTASEC",
        "RATING_CALLID",
        "RATING_STATUS",
    ]
    assert all(c.startswith("SET VARIABLE ") for c in commands)
    values = dict((c.split(" ")[2], c.split(" ", 3)[3].strip('"')) for c in commands)
    # one id per authorization, naming the engine, the caller channel and the moment
    node, uid, millis = values["RATING_CALLID"].split(":")
    assert (node, uid) == ("pbx1", dict(line.split(": ", 1) for line in env)["agi_uniqueid"]) and millis.isdigit()
    assert values["RATING_STATUS"] == "ALLOW" and values["RATING_E164"] == "+33899123456"


async def test_a_client_that_closes_early_does_not_freeze_the_server(tmp_path: Path) -> None:
    async with engine_rig(tmp_path) as rig:
        for partial in (b"", b"agi_network: yes\n", b"garbage without newline"):
            _, w = await asyncio.open_connection("127.0.0.1", rig.port)
            w.write(partial)
            w.close()
        env, _, _ = agi_transcript("answered_callee_hangs_up")
        commands = await asyncio.wait_for(agi_request(rig.port, env), 3)
        assert len(commands) == len(VARIABLES)


async def test_hangup_from_asterisk_stops_the_conversation(tmp_path: Path) -> None:
    async with engine_rig(tmp_path) as rig:
        env, _, _ = agi_transcript("answered_callee_hangs_up")
        commands = await agi_request(rig.port, env, reply=b"HANGUP\n200 result=1\n")
        assert len(commands) == 1  # after the inline HANGUP the server sends nothing more
        commands = await agi_request(rig.port, [*env[:-2], "agi_uniqueid: 9.9"], reply=b"511 Command Not Permitted\n")
        assert len(commands) == 1


async def test_usage_reply_spanning_lines_keeps_replies_in_step(tmp_path: Path) -> None:
    async with engine_rig(tmp_path) as rig:
        env, _, _ = agi_transcript("answered_callee_hangs_up")
        usage = b"520-Invalid command syntax.  Proper usage follows:\nUsage: SET VARIABLE\n520 End of proper usage.\n"
        commands = await agi_request(rig.port, env, reply=usage)
        assert len(commands) == len(VARIABLES)


async def test_a_stalled_engine_still_answers_in_bounded_time_and_lets_emergency_through() -> None:
    async def stall(_req: object) -> list[tuple[str, str]]:
        await asyncio.sleep(60)
        return []

    def fallback(req, why: str) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
        return [("RATING_STATUS", "ALLOW" if req.arg(2) == "112" else "DENY"), ("RATING_REASON", why)]

    server = FastAgiServer({"authorize": stall}, fallback, answer_timeout=0.2)
    port = await server.start("127.0.0.1", 0)
    try:
        env = [*ENV[:-1], "agi_arg_2: 112"]
        commands = await asyncio.wait_for(agi_request(port, env), 2)
        assert commands == ['SET VARIABLE RATING_STATUS "ALLOW"', 'SET VARIABLE RATING_REASON "timeout"']
        unknown = await agi_request(port, ["agi_network_script: nothing", "agi_request: agi://x/nothing"])
        assert unknown == ['SET VARIABLE RATING_STATUS "DENY"', 'SET VARIABLE RATING_REASON "no_route"']
        assert server.stats.fallbacks == 2
    finally:
        await server.close()


async def test_engine_errors_deny_chargeable_calls_but_allow_emergency(tmp_path: Path) -> None:
    async with engine_rig(tmp_path) as rig:
        await rig.ledger.close()  # the ledger is gone: every authorize fails
        env, _, _ = agi_transcript("answered_callee_hangs_up")
        denied = await agi_request(rig.port, env)
        assert verdict(denied) == ("DENY", "engine_error")
        emergency = await agi_request(rig.port, [*env[:-1], "agi_arg_2: 112"])
        assert verdict(emergency) == ("ALLOW", "emergency")
        await rig.ledger.open()


@given(st.text(alphabet=st.characters(codec="utf-8", blacklist_characters="\r\n")))
def test_a_quoted_value_reads_back_as_itself(value: str) -> None:
    """What the engine writes in SET VARIABLE is what the simulator (and Asterisk) reads."""
    assert unquote(quote(value)) == value
    assert read_set_variable(set_variable("RATING_E164", value).decode().rstrip("\n")) == ("RATING_E164", value)
    assert read_set_variable(f"GET VARIABLE {quote(value)}") is None


def _fixed_server(reply_timeout: float = 5.0) -> FastAgiServer:
    fixed = [("RATING_STATUS", "ALLOW"), ("RATING_REASON", "charged"), ("RATING_CALLID", "pbx1:1.2:3")]

    async def handler(_req: object) -> list[tuple[str, str]]:
        return fixed

    return FastAgiServer({"authorize": handler}, lambda _r, _w: fixed, reply_timeout=reply_timeout)


async def test_each_conversation_is_counted_once_as_answered_or_hung_up() -> None:
    server = _fixed_server()
    port = await server.start("127.0.0.1", 0)
    try:
        assert len(await agi_request(port, ENV)) == 3
        assert len(await agi_request(port, ENV, reply=b"511 Command Not Permitted\n")) == 1
        assert len(await agi_request(port, ENV, reply=b"HANGUP\n")) == 1
        reader, writer = await asyncio.open_connection("127.0.0.1", port)  # gone after the first command
        writer.write(("\n".join(ENV) + "\n\n").encode())
        assert (await reader.readline()).startswith(b"SET VARIABLE RATING_STATUS")
        writer.close()
        for _ in range(100):
            if server.stats.hangups == 3:
                break
            await asyncio.sleep(0.01)
        assert (server.stats.requests, server.stats.answered, server.stats.hangups) == (4, 1, 3)
    finally:
        await server.close()


async def test_a_client_that_never_replies_is_let_go_after_reply_timeout() -> None:
    server = _fixed_server(reply_timeout=0.2)
    port = await server.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(("\n".join(ENV) + "\n\n").encode())
        first = await reader.readline()
        rest = await asyncio.wait_for(reader.read(), 2)  # the server closes: no second command
        writer.close()
        assert first.startswith(b"SET VARIABLE RATING_STATUS") and rest == b""
        assert (server.stats.answered, server.stats.hangups) == (0, 0)
    finally:
        await server.close()


async def test_close_lets_a_conversation_in_flight_end() -> None:
    server = _fixed_server()
    port = await server.start("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(("\n".join(ENV) + "\n\n").encode())
    commands = [await reader.readline()]
    closing = asyncio.create_task(server.close())
    await asyncio.sleep(0.05)
    assert not closing.done()  # the first command's reply is still awaited
    while commands[-1]:
        writer.write(b"200 result=1\n")
        commands.append(await reader.readline())
    await asyncio.wait_for(closing, 2)
    writer.close()
    assert len(commands) == 4 and server.stats.answered == 1


async def test_answers_decided_together_each_reach_their_own_channel() -> None:
    """Many handlers finish in one turn of the loop and their commands are written after it: each
    conversation still gets its own variables, all of them, in order."""
    gate = asyncio.Event()

    async def handler(req) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
        await gate.wait()  # every request decided in the same turn, once all have arrived
        return [("RATING_STATUS", "ALLOW"), ("RATING_CALLID", req.uniqueid), ("RATING_E164", req.arg(2))]

    server = FastAgiServer({"authorize": handler}, lambda _r, _w: [])
    port = await server.start("127.0.0.1", 0)
    try:
        envs = [[*ENV[:3], f"agi_uniqueid: 7.{n}", "agi_arg_1: 201", f"agi_arg_2: 0{n:09d}"] for n in range(50)]
        talks = [asyncio.create_task(agi_request(port, env)) for env in envs]
        while server.stats.requests < len(envs):
            await asyncio.sleep(0.01)
        gate.set()
        for n, commands in enumerate(await asyncio.wait_for(asyncio.gather(*talks), 10)):
            assert commands == [
                'SET VARIABLE RATING_STATUS "ALLOW"',
                f'SET VARIABLE RATING_CALLID "7.{n}"',
                f'SET VARIABLE RATING_E164 "0{n:09d}"',
            ]
        assert (server.stats.answered, server.stats.hangups) == (50, 0)
    finally:
        await server.close()


async def test_a_channel_gone_before_its_answer_is_written_counts_as_hung_up() -> None:
    gate = asyncio.Event()

    async def handler(_req: object) -> list[tuple[str, str]]:
        await gate.wait()
        return [("RATING_STATUS", "ALLOW")]

    server = FastAgiServer({"authorize": handler}, lambda _r, _w: [])
    port = await server.start("127.0.0.1", 0)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(("\n".join(ENV) + "\n\n").encode())
        while server.stats.requests < 1:
            await asyncio.sleep(0.01)
        writer.close()  # the caller hung up while the engine decided
        await asyncio.sleep(0.1)
        gate.set()
        await asyncio.wait_for(server.close(), 2)  # nothing waits for a reply that cannot come
        assert (server.stats.requests, server.stats.answered, server.stats.hangups) == (1, 0, 1)
    finally:
        gate.set()
        await server.close()  # again, at once, where the test failed before it closed
