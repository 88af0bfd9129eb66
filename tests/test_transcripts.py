"""Contract: the recorded Asterisk 22 conversations, replayed byte for byte against the engine.

An AMI server in the test greets and logs in as recorded in login.ami, then replays a
scenario's raw bytes (CRLF framing kept); the engine, having authorized the call over
FastAGI with the recorded environment, must answer as the dialplan contract says.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from rating_engine.asterisk.agi import parse_env
from rating_engine.asterisk.ami import AmiParser, format_message
from rating_engine.asterisk.ami_client import AmiClient
from rating_engine.asterisk.simulator import AsteriskSimulator, Scenario
from rating_engine.clock import Clock

from .asterisk_helpers import TRANSCRIPTS, agi_request, agi_transcript, engine_rig, verdict


class ReplayAmi:
    """Plays Asterisk's AMI side from a transcript; records the actions the client sends."""

    def __init__(self) -> None:
        self.actions: list[dict[str, str]] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.logged_in = asyncio.Event()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        login = (TRANSCRIPTS / "login.ami").read_bytes()
        banner, _, rest = login.partition(b"\r\n")
        writer.write(banner + b"\r\n")
        self.writers.append(writer)
        parser = AmiParser()
        while data := await reader.read(65536):
            for msg in parser.feed(data):
                self.actions.append(msg)
                action, aid = msg.get("Action", "").lower(), msg.get("ActionID", "")
                if action == "login":
                    writer.write(rest.replace(b"ActionID: login", f"ActionID: {aid}".encode()))
                    self.logged_in.set()
                elif action == "setvar":
                    writer.write(format_message({"Response": "Success", "ActionID": aid, "Message": "Variable Set"}))
                elif action == "coreshowchannels":
                    writer.write(
                        format_message(
                            {
                                "Response": "Success",
                                "ActionID": aid,
                                "EventList": "start",
                                "Message": "Channels will follow",
                            }
                        )
                    )
                    writer.write(
                        format_message(
                            {
                                "Event": "CoreShowChannelsComplete",
                                "ActionID": aid,
                                "EventList": "Complete",
                                "ListItems": "0",
                            }
                        )
                    )
                else:
                    writer.write(format_message({"Response": "Success", "ActionID": aid}))

    def replay(self, name: str) -> None:
        raw = b"".join((TRANSCRIPTS / f"{n}.ami").read_bytes() for n in [name, *TAILS.get(name, [])])
        for w in self.writers:
            w.write(raw)

    def setvars(self) -> list[dict[str, str]]:
        return [a for a in self.actions if a.get("Action", "").lower() == "setvar"]

    async def close(self) -> None:
        for w in self.writers:
            w.close()
        self.server.close()


SCENARIOS = {
    # name: (answered?, caller channel of the rated call)
    "answered_callee_hangs_up": (True, "Local/s@caller-sim-0000000f;1"),
    "cut_by_dial_limit": (True, None),
    "caller_hangs_up_first": (True, None),
    "hangup_action_mid_call": (True, None),
    "quota_set_and_extended_by_setvar": (True, None),
    "phone_like_answered": (True, "Local/0033899123456@from-internal-00000013;2"),
    "busy": (False, None),
    "no_answer": (False, None),
}
# Recordings stop 12 s after the call starts; the no-answer call's end (Dial's 20 s timeout)
# was captured at the start of the next recording.
TAILS = {"no_answer": ["denied_by_engine"]}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_recorded_calls_are_followed_settled_once_or_released(tmp_path: Path, name: str) -> None:
    answered, channel = SCENARIOS[name]
    env, _, _ = agi_transcript(name)
    async with engine_rig(tmp_path) as rig:
        ami = ReplayAmi()
        port = await ami.start()
        client = AmiClient("127.0.0.1", port, "rating", "secret", rig.agent.on_ami_event, rig.engine.reconcile)
        rig.engine.pbx = client
        await client.start()
        try:
            assert await client.wait_logged_in(3)
            commands = await agi_request(rig.port, env)
            assert verdict(commands) == ("ALLOW", "charged")
            call_id = next(c for c in commands if "RATING_CALLID" in c).split(" ", 3)[3].strip('"')
            assert [r.call_id for r in await rig.ledger.reservations()] == [call_id]
            ended = asyncio.Event()
            rig.engine.observer = lambda what, f: ended.set() if what in ("settled", "released") else None
            ami.replay(name)
            await asyncio.wait_for(ended.wait(), 5)
            assert call_id not in rig.engine.calls
            await asyncio.sleep(0.1)
            rows = [r for r in await rig.ledger.activity("acme") if r.call_id == call_id]
            assert await rig.ledger.reservations() == []
            if answered:
                [row] = rows
                assert row.e164 == "+33899123456"
                [setvar] = [a for a in ami.setvars() if a.get("Variable") == "TIMEOUT(absolute)"][:1]
                assert int(setvar["Value"]) > 0
                if channel:
                    assert setvar["Channel"] == channel
            else:
                assert rows == [] and ami.setvars() == []
            ami.replay(name)  # Asterisk repeating itself (a replayed Hangup/Cdr) settles nothing twice
            await asyncio.sleep(0.2)
            assert len([r for r in await rig.ledger.activity("acme") if r.call_id == call_id]) == len(rows)
            assert await rig.ledger.check() == []
        finally:
            await client.close()
            await ami.close()


async def test_denied_call_leaves_nothing_behind(tmp_path: Path) -> None:
    env, _, _ = agi_transcript("denied_by_engine")
    async with engine_rig(tmp_path, balance=0) as rig:
        commands = await agi_request(rig.port, env)
        assert verdict(commands) == ("DENY", "insufficient_funds")
        assert await rig.ledger.reservations() == []


def _messages(raw: bytes) -> list[dict[str, str]]:
    return AmiParser().feed(raw)


def test_the_recorded_cdrs_tell_a_caller_that_dialed_from_one_that_never_did() -> None:
    """What reconciliation releases by (`Engine.reconcile`, `CdrRecords.find`), read off the
    recordings: the caller of every call that dialed, answered or not, has a Cdr naming the called
    channel, and after a failed Dial another naming none (the dialplan after it); the caller the
    engine refused has Cdrs, and none names a called channel."""
    events = [m for f in sorted(TRANSCRIPTS.glob("*.ami")) for m in _messages(f.read_bytes())]
    dialed = {m.get("Uniqueid") for m in events if m.get("Event") == "DialBegin"}
    for name in [*sorted(SCENARIOS), "denied_by_engine"]:
        env, _, _ = agi_transcript(name)
        uid = parse_env("\n".join(env).encode()).uniqueid
        called = [
            m.get("DestinationChannel", "") for m in events if m.get("Event") == "Cdr" and m.get("UniqueID") == uid
        ]
        assert called, f"{name}: no Cdr of the caller"
        assert (uid in dialed) is (name != "denied_by_engine"), name
        assert any(called) is (uid in dialed), f"{name}: dialed {uid in dialed}, Cdrs naming {called}"
        if name in ("busy", "no_answer"):
            assert "" in called, f"{name}: no record of the dialplan after the Dial"


def _orders(raw: bytes) -> dict[str, tuple[str, ...]]:
    """Header order per event kind (DialBegin/DialEnd split by whether they carry a Channel)."""
    out: dict[str, tuple[str, ...]] = {}
    for block in raw.split(b"\r\n\r\n"):
        names = tuple(line.split(b": ", 1)[0].rstrip(b":").decode() for line in block.split(b"\r\n") if line)
        if names and names[0] == "Event":
            event = block.split(b"\r\n", 1)[0].split(b": ", 1)[1].decode()
            if event in ("DialBegin", "DialEnd"):
                event += ":channel" if "Channel" in names else ":nochannel"
            out.setdefault(event, tuple(n for n in names if n != "Timestamp"))
    return out


async def test_the_simulator_speaks_the_recorded_protocol() -> None:
    recorded: dict[str, tuple[str, ...]] = {}
    for f in sorted(TRANSCRIPTS.glob("*.ami")):
        for k, v in _orders(f.read_bytes()).items():
            recorded.setdefault(k, v)
    clock = Clock(speed=50)
    sim = AsteriskSimulator(clock, agi_port=1)  # nothing listens there: the call is refused, fail closed
    port = await sim.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert (await reader.readline()) == (TRANSCRIPTS / "login.ami").read_bytes().split(b"\r\n", 1)[0] + b"\r\n"
    writer.write(format_message({"Action": "Login", "Username": "rating", "Secret": "simulator", "ActionID": "l"}))
    first = await reader.readuntil(b"\r\n\r\n")
    assert first == b"Response: Success\r\nActionID: l\r\nMessage: Authentication accepted\r\n\r\n"
    # A call through a live engine is covered by test_e2e; here every scenario without one.
    await sim.place_call(Scenario("0899123456"))
    await asyncio.sleep(0.05)
    writer.write(format_message({"Action": "CoreShowChannels", "ActionID": "s"}))
    await asyncio.sleep(0.05)
    data = await asyncio.wait_for(reader.read(1 << 20), 2)
    ours = _orders(data)
    assert {"FullyBooted", "Newchannel", "Cdr", "Hangup", "CoreShowChannelsComplete"} <= set(ours)
    for event, order in ours.items():
        assert order == recorded[event], event
    hangup = [m for m in _messages(data) if m.get("Event") == "Hangup"][-1]
    assert hangup["Cause"] == "21"  # AGISTATUS without variables: the dialplan refuses (fail closed)
    writer.close()
    await sim.close()


async def test_the_simulator_answers_playdtmf_as_asterisk_does(tmp_path: Path) -> None:
    """PlayDTMF: an error for an unknown channel or no digit; a warning heard only on a bridged charged call."""
    clock = Clock(speed=20)
    async with engine_rig(tmp_path, speed=20) as rig:
        sim = AsteriskSimulator(clock, rig.port)
        port = await sim.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        parser = AmiParser(expect_banner=True)

        async def send(**headers: str) -> dict[str, str]:
            writer.write(format_message(headers))
            while True:
                for msg in parser.feed(await reader.read(65536)):
                    if msg.get("ActionID") == headers.get("ActionID") and "Response" in msg:
                        return msg

        login = await send(Action="Login", ActionID="1", Username="rating", Secret="simulator")
        assert login["Response"] == "Success"
        missing = await send(Action="PlayDTMF", ActionID="2", Channel="PJSIP/none-1", Digit="D", Receive="yes")
        assert (missing["Response"], missing["Message"]) == ("Error", "Channel not found")
        task = asyncio.create_task(sim.place_call(Scenario("0899123456", talk=30, ring=10)))
        while not sim.channels:
            await asyncio.sleep(0.01)
        caller = next(iter(sim.channels.values()))
        ringing = await send(Action="PlayDTMF", ActionID="3", Channel=caller.name, Digit="D", Receive="yes")
        assert ringing["Message"] == "DTMF successfully queued"
        assert (await send(Action="PlayDTMF", ActionID="4", Channel=caller.name, Digit=""))["Response"] == "Error"
        while not caller.bridged:
            await asyncio.sleep(0.01)
        await send(Action="PlayDTMF", ActionID="5", Channel=caller.name, Digit="1", Receive="yes")  # not the feature
        await send(Action="PlayDTMF", ActionID="6", Channel=caller.name, Digit="D")  # sent out, not received
        await send(Action="PlayDTMF", ActionID="7", Channel=caller.name, Digit="D", Receive="yes")
        call = await task
        assert len(call.warnings) == 1 and call.answered_at is not None and call.warnings[0] >= call.answered_at
        writer.close()
        await sim.close()


async def test_deadlines_in_the_simulator_end_calls_as_asterisk_does(tmp_path: Path) -> None:
    """Nobody following the calls: the called channel's deadline (set by U() at the answer) ends the
    first call; on the second, a shorter TIMEOUT(absolute) set on the caller fires first and the
    caller's channel hangs up from `T` (priority 2, Hangup(16))."""
    clock = Clock(speed=25)
    async with engine_rig(tmp_path, speed=25) as rig:
        sim = AsteriskSimulator(clock, rig.port)
        port = await sim.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(format_message({"Action": "Login", "ActionID": "1", "Username": "rating", "Secret": "simulator"}))
        parser = AmiParser(expect_banner=True)
        events: list[dict[str, str]] = []

        async def hangup_of(uid: str) -> dict[str, str]:
            while True:
                found = [e for e in events if e.get("Event") == "Hangup" and e.get("Uniqueid") == uid]
                if found:
                    return found[0]
                events.extend(parser.feed(await asyncio.wait_for(reader.read(1 << 16), 5)))

        paid = await sim.place_call(Scenario("0899123456", talk=600, ring=1))
        assert paid.cut_by_deadline and paid.answered_at is not None and paid.ended_at is not None
        assert abs(paid.ended_at - paid.answered_at - int(paid.variables["RATING_QUOTASEC"])) < 2
        assert (await hangup_of(paid.uniqueid))["Exten"] != "T"  # the called channel ended it

        task = asyncio.create_task(sim.place_call(Scenario("0899123456", talk=600, ring=1)))
        while not any(c.bridged for c in sim.channels.values()):
            await asyncio.sleep(0.01)
        caller = next(c for c in sim.channels.values() if c.name.startswith("PJSIP/201"))
        writer.write(format_message({"Action": "Setvar", "ActionID": "2", "Channel": caller.name,
                                     "Variable": "TIMEOUT(absolute)", "Value": "5"}))  # fmt: skip
        call = await task
        assert call.cut_by_deadline
        hangup = await hangup_of(call.uniqueid)
        assert (hangup["Exten"], hangup["Priority"], hangup["Cause"]) == ("T", "2", "16")
        writer.close()
        await sim.close()
