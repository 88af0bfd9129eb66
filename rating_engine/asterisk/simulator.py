"""An Asterisk on 127.0.0.1 for the tests, the demo and the benchmarks: our `TestClient`.

It plays what a real Asterisk 22 does with the shipped dialplan and a SIP phone calling out
(the caller channel is answered when the callee answers): the FastAGI request with the
recorded environment, then the AMI events of the call with the transcripts' headers in their
order (see templates.py), honouring `Setvar TIMEOUT(absolute)` — a deadline counted from when
it is set; a later Setvar moves it; 0 removes it; when it fires the caller channel runs the
dialplan's `T` extension (`Hangup(16)`) — `PlayDTMF` with `Receive: yes` (on a bridged charged
call the `rating-warning` feature plays the warning to the caller), and the `Hangup` and
`CoreShowChannels` actions. It sends the event classes a least-privilege billing user gets (system, call, cdr),
so no dialplan `Newexten`/`VarSet` noise. Time comes from a shared `Clock`, so it can run fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from ..clock import Clock
from .agi import read_set_variable
from .ami import BANNER, AmiParser, format_message
from .cdr import CdrRecord, format_row
from .templates import EVENT_HEADERS

Outcome = Literal["answer", "busy", "noanswer", "cancel"]
WARNING_DIGIT = "D"  # features.conf: rating-warning => D,self,Playback,custom/rating-warning
STATE_DESC = {0: "Down", 4: "Ring", 5: "Ringing", 6: "Up"}
CAUSE_TXT = {16: "Normal Clearing", 17: "User busy", 19: "No user responding", 21: "Call Rejected"}


@dataclass(frozen=True, slots=True)
class Scenario:
    dialed: str
    ext: str = "201"
    name: str = "Alice"
    account: str = ""
    outcome: Outcome = "answer"
    ring: float = 2.0
    talk: float = 30.0
    """Seconds of conversation before `hangup_by` hangs up (if no deadline comes first)."""
    hangup_by: Literal["callee", "caller"] = "callee"
    dial_timeout: float = 20.0


@dataclass(slots=True)
class CallResult:
    uniqueid: str
    channel: str
    variables: dict[str, str]
    answered_at: float | None = None
    ended_at: float | None = None
    cut_by_deadline: bool = False
    hung_up_by_action: bool = False
    dial_status: str = ""
    billable: int = 0
    timeouts_set: list[int] = field(default_factory=list)
    warnings: list[float] = field(default_factory=list)
    """Clock times at which the caller heard the warning."""

    @property
    def status(self) -> str:
        return self.variables.get("RATING_STATUS", "")

    @property
    def reason(self) -> str:
        return self.variables.get("RATING_REASON", "")


@dataclass(slots=True)
class _Channel:
    name: str
    uid: str
    linked: str
    ext: str
    cid_name: str
    exten: str
    context: str
    state: int = 0
    priority: int = 1
    deadline: float | None = None
    features: str = ""
    """DTMF digits of the dynamic features the dialplan enabled (DYNAMIC_FEATURES)."""
    bridged: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    hangup_action: bool = False
    result: CallResult | None = None
    app: str = "AGI"

    def fields(self, prefix: str = "") -> dict[str, str]:
        return {
            f"{prefix}Channel": self.name,
            f"{prefix}ChannelState": str(self.state),
            f"{prefix}ChannelStateDesc": STATE_DESC.get(self.state, "Unknown"),
            f"{prefix}CallerIDNum": self.ext,
            f"{prefix}CallerIDName": self.cid_name,
            f"{prefix}ConnectedLineNum": "<unknown>",
            f"{prefix}ConnectedLineName": "<unknown>",
            f"{prefix}Language": "en",
            f"{prefix}AccountCode": "",
            f"{prefix}Context": self.context,
            f"{prefix}Exten": self.exten,
            f"{prefix}Priority": str(self.priority),
            f"{prefix}Uniqueid": self.uid,
            f"{prefix}Linkedid": self.linked,
        }


class AsteriskSimulator:
    def __init__(
        self,
        clock: Clock,
        agi_port: int,
        *,
        agi_host: str = "127.0.0.1",
        username: str = "rating",
        secret: str = "simulator",
        timestamps: bool = True,
        agi_script: str = "authorize",
        cdr_file: Path | None = None,
    ) -> None:
        self.clock = clock
        self.agi_host, self.agi_port, self.agi_script = agi_host, agi_port, agi_script
        self.username, self.secret = username, secret
        self.timestamps = timestamps
        self.cdr_file = cdr_file
        self.channels: dict[str, _Channel] = {}
        self.clients: set[asyncio.StreamWriter] = set()
        self.logged_in: set[asyncio.StreamWriter] = set()
        self.actions: list[dict[str, str]] = []
        self._seq = itertools.count(0x10)
        self._server: asyncio.Server | None = None
        self.port = 0

    # ------------------------------------------------------------ AMI server
    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._serve_ami, "127.0.0.1", port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self.drop_ami_clients()
        if self._server is not None:
            await self._server.wait_closed()

    async def drop_ami_clients(self) -> None:
        """Cut every AMI connection (as a restart of the link would)."""
        for w in list(self.clients):
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()
        self.clients.clear()
        self.logged_in.clear()

    async def _serve_ami(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.clients.add(writer)
        writer.write(BANNER)
        parser = AmiParser()
        try:
            while data := await reader.read(65536):
                for msg in parser.feed(data):
                    self._answer_action(writer, msg)
        except ConnectionError:
            pass
        finally:
            self.clients.discard(writer)
            self.logged_in.discard(writer)
            writer.close()

    def _reply(self, writer: asyncio.StreamWriter, action_id: str, *pairs: tuple[str, str], ok: bool = True) -> None:
        head = [("Response", "Success" if ok else "Error"), ("ActionID", action_id)]
        writer.write(format_message([*head, *pairs]))

    def _answer_action(self, writer: asyncio.StreamWriter, msg: dict[str, str]) -> None:
        low = {k.lower(): v for k, v in msg.items()}
        action, aid = low.get("action", "").lower(), low.get("actionid", "")
        self.actions.append(msg)
        if action == "login":
            if low.get("username") == self.username and low.get("secret") == self.secret:
                self._reply(writer, aid, ("Message", "Authentication accepted"))
                self.logged_in.add(writer)
                writer.write(
                    format_message(
                        self._event(
                            "FullyBooted",
                            {"Privilege": "system,all", "Uptime": "164", "LastReload": "164", "Status": "Fully Booted"},
                        )
                    )
                )
            else:
                self._reply(writer, aid, ("Message", "Authentication failed"), ok=False)
            return
        if writer not in self.logged_in:
            self._reply(writer, aid, ("Message", "Permission denied"), ok=False)
            return
        if action == "ping":
            self._reply(writer, aid, ("Ping", "Pong"), ("Timestamp", f"{self.clock.now():.6f}"))
        elif action == "setvar":
            ch = self._by_name(low.get("channel", ""))
            if ch is None:
                self._reply(writer, aid, ("Message", "Channel not found"), ok=False)
                return
            if low.get("variable", "").upper() == "TIMEOUT(ABSOLUTE)":
                self._set_deadline(ch, low.get("value", ""))
            self._reply(writer, aid, ("Message", "Variable Set"))
        elif action == "playdtmf":
            ch = self._by_name(low.get("channel", ""))
            digit = low.get("digit", "")
            if ch is None:
                self._reply(writer, aid, ("Message", "Channel not found"), ok=False)
                return
            if not digit:
                self._reply(writer, aid, ("Message", "No digit specified"), ok=False)
                return
            # Received as if pressed: a feature of the bridge runs only while the channel is bridged.
            receive = low.get("receive", "").lower() in ("yes", "true", "y", "t", "1", "on")
            if receive and ch.bridged and digit[0] in ch.features and ch.result is not None:
                ch.result.warnings.append(self.clock.now())
            self._reply(writer, aid, ("Message", "DTMF successfully queued"))
        elif action == "hangup":
            ch = self._by_name(low.get("channel", ""))
            if ch is None:
                self._reply(writer, aid, ("Message", "No such channel"), ok=False)
                return
            ch.hangup_action = True
            ch.changed.set()
            self._reply(writer, aid, ("Message", "Channel Hungup"))
        elif action == "coreshowchannels":
            self._reply(writer, aid, ("EventList", "start"), ("Message", "Channels will follow"))
            live = list(self.channels.values())
            for ch in live:
                writer.write(
                    format_message(
                        self._headers(
                            "CoreShowChannel",
                            {
                                "ActionID": aid,
                                **ch.fields(),
                                "Application": ch.app,
                                "ApplicationData": "",
                                "Duration": "00:00:01",
                                "BridgeId": "",
                            },
                        )
                    )
                )
            writer.write(
                format_message(
                    self._headers(
                        "CoreShowChannelsComplete",
                        {"ActionID": aid, "EventList": "Complete", "ListItems": str(len(live))},
                    )
                )
            )
        elif action == "logoff":
            self._reply(writer, aid, ("Message", "Thanks for all the fish."), ok=False)
            writer.close()
        else:
            self._reply(writer, aid, ("Message", "Invalid/unknown command"), ok=False)

    def _by_name(self, name: str) -> _Channel | None:
        return next((c for c in self.channels.values() if c.name == name), None)

    def _set_deadline(self, ch: _Channel, value: str) -> None:
        try:
            seconds = float(value)
        except ValueError:
            return
        ch.deadline = None if seconds <= 0 else self.clock.now() + seconds
        if ch.result is not None and seconds > 0:
            ch.result.timeouts_set.append(int(seconds))
        ch.changed.set()

    def _headers(self, key: str, values: dict[str, str]) -> list[tuple[str, str]]:
        names = EVENT_HEADERS[key]
        event = key.split(":", 1)[0]
        out = [(n, event if n == "Event" else values.get(n, "")) for n in names]
        if "Privilege" in names:
            out[names.index("Privilege")] = ("Privilege", values.get("Privilege", "call,all"))
        if self.timestamps and "Privilege" in names:
            out.insert(names.index("Privilege") + 1, ("Timestamp", f"{self.clock.now():.6f}"))
        return out

    def _event(self, key: str, values: dict[str, str]) -> list[tuple[str, str]]:
        if key in EVENT_HEADERS:
            return self._headers(key, values)
        return [("Event", key), *values.items()]

    def emit(self, key: str, values: dict[str, str]) -> None:
        data = format_message(self._headers(key, values))
        for w in list(self.logged_in):
            if not w.is_closing():
                w.write(data)

    # ------------------------------------------------------------ calls
    def _new_channel(self, tech: str, ext: str, name: str, exten: str, context: str, linked: str = "") -> _Channel:
        seq = next(self._seq)
        uid = f"{int(self.clock.now())}.{seq}"
        ch = _Channel(f"{tech}-{seq:08x}", uid, linked or uid, ext, name, exten, context)
        self.channels[uid] = ch
        self.emit("Newchannel", ch.fields())
        return ch

    def _hangup(self, ch: _Channel, cause: int) -> None:
        self.channels.pop(ch.uid, None)
        self.emit("Hangup", {**ch.fields(), "Cause": str(cause), "Cause-txt": CAUSE_TXT.get(cause, "Unknown")})

    def _cdr(
        self,
        caller: _Channel,
        callee: _Channel | None,
        scenario: Scenario,
        start: float,
        answer: float | None,
        end: float,
        disposition: str,
    ) -> None:
        def local(t: float | None) -> str:
            return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else ""

        billable = math.floor(end - answer) if answer is not None else 0
        if self.cdr_file is not None:  # cdr_custom's mapping (asterisk_conf/cdr_custom.conf), written at the end
            record = CdrRecord(caller.uid, answer, end, billable, disposition, callee.name if callee else "")
            with self.cdr_file.open("a", encoding="utf-8") as f:
                f.write(format_row(record))
        self.emit(
            "Cdr",
            {
                "Privilege": "cdr,all",
                "AccountCode": scenario.account,
                "Source": scenario.ext,
                "Destination": scenario.dialed,
                "DestinationContext": "from-internal",
                "CallerID": f'"{scenario.name}" <{scenario.ext}>',
                "Channel": caller.name,
                "DestinationChannel": callee.name if callee else "",
                "LastApplication": "Dial" if callee else "Hangup",
                "LastData": f"PJSIP/{scenario.dialed}@trunk,{int(scenario.dial_timeout)}" if callee else "21",
                "StartTime": local(start),
                "AnswerTime": local(answer),
                "EndTime": local(end),
                "Duration": str(math.floor(end - start)),
                "BillableSeconds": str(billable),
                "Disposition": disposition,
                "AMAFlags": "DOCUMENTATION",
                "UniqueID": caller.uid,
                "UserField": "",
            },
        )

    async def _agi(self, caller: _Channel, scenario: Scenario) -> dict[str, str]:
        """The FastAGI request, with the recorded environment's names and order."""
        env = [
            ("agi_network", "yes"),
            ("agi_network_script", self.agi_script),
            ("agi_request", f"agi://{self.agi_host}:{self.agi_port}/{self.agi_script}"),
            ("agi_channel", caller.name),
            ("agi_language", "en"),
            ("agi_type", "PJSIP"),
            ("agi_uniqueid", caller.uid),
            ("agi_version", "22.10.1"),
            ("agi_callerid", scenario.ext),
            ("agi_calleridname", scenario.name),
            ("agi_callingpres", "0"),
            ("agi_callingani2", "0"),
            ("agi_callington", "0"),
            ("agi_callingtns", "0"),
            ("agi_dnid", scenario.dialed),
            ("agi_rdnis", "unknown"),
            ("agi_context", "from-internal"),
            ("agi_extension", scenario.dialed),
            ("agi_priority", "3"),
            ("agi_enhanced", "0.0"),
            ("agi_accountcode", scenario.account),
            ("agi_threadid", "140246878148288"),
            ("agi_arg_1", scenario.ext),
            ("agi_arg_2", scenario.dialed),
        ]
        variables: dict[str, str] = {}
        try:
            reader, writer = await asyncio.open_connection(self.agi_host, self.agi_port)
        except OSError:
            return variables  # AGISTATUS=FAILURE: the dialplan's fail-closed path
        writer.write(b"".join(f"{k}: {v}\n".encode() for k, v in env) + b"\n")
        try:
            while line := await asyncio.wait_for(reader.readline(), 30):
                setting = read_set_variable(line.decode().strip())
                if setting is not None:
                    variables[setting[0]] = setting[1]
                    writer.write(b"200 result=1\n")
                else:
                    writer.write(b"510 Invalid or unknown command\n")
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
        return variables

    async def place_call(self, scenario: Scenario) -> CallResult:
        """One call from an extension through the shipped dialplan, to its end."""
        start = self.clock.now()
        caller = self._new_channel(
            f"PJSIP/{scenario.ext}", scenario.ext, scenario.name, scenario.dialed, "from-internal"
        )
        variables = await self._agi(caller, scenario)
        result = CallResult(caller.uid, caller.name, variables)
        caller.result = result
        if variables.get("RATING_STATUS") != "ALLOW" or not variables.get("RATING_REASON"):
            end = self.clock.now()
            self._cdr(caller, None, scenario, start, None, end, "NO ANSWER")
            self._hangup(caller, 21)
            result.ended_at, result.dial_status = end, ""
            return result
        guard = variables.get("RATING_GUARDSEC", "")
        if guard:
            self._set_deadline(caller, guard)
            result.timeouts_set.clear()
            caller.features = WARNING_DIGIT  # the dialplan's Set(__DYNAMIC_FEATURES=…rating-warning)
        callee = self._new_channel("PJSIP/trunk", scenario.dialed, scenario.name, "", "from-trunk", caller.uid)
        caller.app = "Dial"
        dial_values = {**caller.fields(), **callee.fields("Dest"), "DialString": f"{scenario.dialed}@trunk"}
        self.emit("DialBegin:channel", dial_values)
        callee.state = 5
        self.emit("Newstate", callee.fields())
        ring = scenario.dial_timeout if scenario.outcome == "noanswer" else scenario.ring
        why = await self._wait(caller, ring, callee)
        status = {"answer": "ANSWER", "busy": "BUSY", "noanswer": "NOANSWER", "cancel": "CANCEL"}[scenario.outcome]
        if why != "done":  # the deadline or a Hangup action ended the call while it rang
            status = "CANCEL"
        if why == "deadline":
            self._run_t_extension(caller)
        if status != "ANSWER":
            end = self.clock.now()
            self.emit("DialEnd:channel", {**caller.fields(), **callee.fields("Dest"), "DialStatus": status})
            self._hangup(callee, 17 if status == "BUSY" else 16)
            self._cdr(caller, callee, scenario, start, None, end, "BUSY" if status == "BUSY" else "NO ANSWER")
            # the dialplan after Dial (its Hangup) is a record of its own, with no called channel
            self._cdr(caller, None, scenario, end, None, end, "NO ANSWER")
            self._hangup(caller, 17 if status == "BUSY" else 16)
            result.ended_at, result.dial_status = end, status
            return result
        answered = self.clock.now()
        callee.state = caller.state = 6
        self.emit("Newstate", callee.fields())
        self.emit("Newstate", caller.fields())
        self.emit("DialEnd:channel", {**caller.fields(), **callee.fields("Dest"), "DialStatus": "ANSWER"})
        bridge = {
            "BridgeUniqueid": f"bridge-{caller.uid}",
            "BridgeType": "basic",
            "BridgeTechnology": "simple_bridge",
            "BridgeCreator": "<unknown>",
            "BridgeName": "<unknown>",
            "BridgeVideoSourceMode": "none",
        }
        self.emit("BridgeCreate", {**bridge, "BridgeNumChannels": "0"})
        self.emit("BridgeEnter", {**bridge, "BridgeNumChannels": "1", **callee.fields()})
        self.emit("BridgeEnter", {**bridge, "BridgeNumChannels": "2", **caller.fields()})
        result.answered_at, result.dial_status = answered, "ANSWER"
        caller.bridged = callee.bridged = True
        if guard:  # Dial's U(rating-paid-time^QUOTA) ran on the called channel at the answer
            quota = variables.get("RATING_QUOTASEC", "")
            if quota.isdigit() and int(quota) > 0:
                self._set_deadline(callee, quota)
            else:
                callee.hangup_action = True  # GOSUB_RESULT=ABORT: no paid time, not connected
        why = await self._wait(caller, scenario.talk, callee)
        end = self.clock.now()
        caller.bridged = callee.bridged = False
        result.cut_by_deadline = why in ("deadline", "callee_deadline")
        if why == "deadline":
            self._run_t_extension(caller)
        result.hung_up_by_action = why == "action"
        if why == "callee_deadline" or (why == "done" and scenario.hangup_by == "callee"):
            self._hangup(callee, 16)
            self.emit("BridgeLeave", {**bridge, "BridgeNumChannels": "1", **caller.fields()})
            self.emit("BridgeDestroy", {**bridge, "BridgeNumChannels": "0"})
            self._cdr(caller, callee, scenario, start, answered, end, "ANSWERED")
            self._hangup(caller, 16)
        else:
            self._cdr(caller, callee, scenario, start, answered, end, "ANSWERED")
            self.emit("BridgeLeave", {**bridge, "BridgeNumChannels": "1", **caller.fields()})
            self.emit("BridgeLeave", {**bridge, "BridgeNumChannels": "0", **callee.fields()})
            self._hangup(callee, 16)
            self._hangup(caller, 16)
            self.emit("BridgeDestroy", {**bridge, "BridgeNumChannels": "0"})
        result.ended_at = end
        result.billable = math.floor(end - answered)
        return result

    @staticmethod
    def _run_t_extension(caller: _Channel) -> None:
        """TIMEOUT(absolute) fired: Dial returns and the channel runs `T` (NoOp, then Hangup(16))."""
        caller.exten, caller.priority, caller.app = "T", 2, "Hangup"

    async def _wait(self, ch: _Channel, seconds: float, other: _Channel) -> str:
        """Wait `seconds` of clock time, or less if a deadline (the caller's: "deadline", the called
        channel's: "callee_deadline") or a Hangup action comes first."""
        until = self.clock.now() + seconds
        while True:
            if ch.hangup_action or other.hangup_action:
                return "action"
            now = self.clock.now()
            for channel, why in ((ch, "deadline"), (other, "callee_deadline")):
                if channel.deadline is not None and channel.deadline <= now and channel.deadline <= until:
                    return why
            if now >= until:
                return "done"
            deadlines = [d for d in (ch.deadline, other.deadline) if d is not None]
            nearest = min([until, *deadlines])
            ch.changed.clear()
            other.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_either(ch.changed, other.changed), self.clock.real(nearest - now))


async def _either(a: asyncio.Event, b: asyncio.Event) -> None:
    tasks = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
