"""Test base: the sample tariffs, a fresh PostgreSQL database, a ledger on each backend, a
loop-exception guard, and the suite on both event loops."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from rating_engine import number_cache
from rating_engine.ledger import Ledger
from rating_engine.rating.catalog import Tariffs, load_tariffs

from .ledgers import BACKENDS, database_url, opened, pg_database

ROOT = Path(__file__).resolve().parent.parent
OFFICE_FR = ROOT / "tariffs" / "office-fr.toml"

try:
    import uvloop

    LOOPS = ["asyncio", "uvloop"]
except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
    LOOPS = ["asyncio"]


@pytest.fixture(scope="session", autouse=True)
def installed_number_table() -> None:
    """The compiled number table installed once, as a service does before it listens: else the
    first test to classify builds it (3-4 s) inside its own `answer_timeout`, and fails alone."""
    number_cache.install()


@pytest.fixture(scope="session")
def tariffs() -> Tariffs:
    return load_tariffs([OFFICE_FR])


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL database of the test's own, dropped after it (see `ledgers.pg_database`)."""
    with pg_database() as url:
        yield url


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A ledger's URL on each backend in turn: a test that takes it runs on SQLite and on PostgreSQL."""
    yield from database_url(request.param, tmp_path)


@pytest.fixture
async def ledger(url: str) -> AsyncIterator[Ledger]:
    """The ledger at `url`, open for the test."""
    async with opened(url) as led:
        yield led


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every async test runs once on plain asyncio and once on uvloop (as asyncpg's suite)."""
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
    if "uvloop" in LOOPS:
        factories["uvloop"] = uvloop.new_event_loop
    return factories


@pytest.fixture
async def loop_guard() -> AsyncIterator[None]:
    """Fail the test if its event loop saw an exception nobody handled (as asyncpg's _testbase)."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    yield
    await asyncio.sleep(0)
    loop.set_exception_handler(None)
    if seen:
        first = seen[0]
        pytest.fail(f"unhandled in the event loop: {first.get('message')} {first.get('exception')!r}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.fixturenames.append("loop_guard")
