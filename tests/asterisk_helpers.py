"""Shared pieces for the Asterisk tests: transcripts, a running engine, a FastAGI client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from rating_engine.asterisk.agent import Agent, Sources
from rating_engine.asterisk.agi import read_set_variable
from rating_engine.asterisk.agi_server import FastAgiServer
from rating_engine.clock import Clock
from rating_engine.config import EngineSection
from rating_engine.engine import Engine
from rating_engine.ledger import AccountSettings, Ledger, make_ledger
from rating_engine.rating.catalog import TariffStore

from .conftest import OFFICE_FR
from .helpers import EUR

TRANSCRIPTS = Path(__file__).parent / "transcripts"


def agi_transcript(name: str) -> tuple[list[str], list[str], list[str]]:
    """(environment lines, commands the hook sent, replies Asterisk gave) of a recorded .agi file."""
    env: list[str] = []
    commands: list[str] = []
    replies: list[str] = []
    in_env = True
    for raw in (TRANSCRIPTS / f"{name}.agi").read_text().splitlines():
        if raw.startswith("<< "):
            line = raw[3:]
            if in_env:
                if line == "":
                    in_env = False
                else:
                    env.append(line)
            else:
                replies.append(line)
        elif raw == "<< ":
            in_env = False
        elif raw.startswith(">> "):
            commands.append(raw[3:])
    return env, commands, replies


async def agi_request(port: int, env_lines: list[str], reply: bytes = b"200 result=1\n") -> list[str]:
    """Play Asterisk's side of one FastAGI request; the commands the server sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(("\n".join(env_lines) + "\n\n").encode())
    commands = []
    while line := await asyncio.wait_for(reader.readline(), 5):
        commands.append(line.decode().rstrip("\n"))
        writer.write(reply)
    writer.close()
    return commands


def said(commands: list[str]) -> dict[str, str]:
    """The variables a FastAGI conversation set, by name (each command `SET VARIABLE NAME "value"`)."""
    out = {}
    for c in commands:
        setting = read_set_variable(c)
        assert setting is not None, c
        out[setting[0]] = setting[1]
    return out


def verdict(commands: list[str]) -> tuple[str, str]:
    """(RATING_STATUS, RATING_REASON) of a conversation."""
    variables = said(commands)
    return variables.get("RATING_STATUS", ""), variables.get("RATING_REASON", "")


@dataclass
class Rig:
    ledger: Ledger
    engine: Engine
    agi: FastAgiServer
    port: int
    clock: Clock
    agent: Agent


@asynccontextmanager
async def engine_rig(
    tmp_path: Path,
    balance: int = 20 * EUR,
    speed: float = 1.0,
    url: str | None = None,
    answer_timeout: float = 2.0,
    **settings: object,
) -> AsyncIterator[Rig]:
    ledger = make_ledger(url or f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    await ledger.open()
    if await ledger.find_account("acme") is None:
        await ledger.create_account("acme", AccountSettings("office-fr", "EUR"))
        if balance:
            await ledger.topup("acme", balance, "opening")
    clock = Clock(speed=speed)
    engine = Engine(TariffStore([OFFICE_FR]), ledger, clock, EngineSection(**settings))  # type: ignore[arg-type]
    agent = Agent(engine, Sources(account="fixed:acme"))
    agi = agent.fastagi_server(answer_timeout=answer_timeout)
    port = await agi.start("127.0.0.1", 0)
    try:
        yield Rig(ledger, engine, agi, port, clock, agent)
    finally:
        await agi.close()
        await ledger.close()
