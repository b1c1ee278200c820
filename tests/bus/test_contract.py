"""The bus contract (roomsync.testing.bus_contract) against every bus implementation."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from roomsync.bus import Bus, MemoryBus
from roomsync.bus.redis import RedisBus
from roomsync.testing.bus_contract import BUS_CONTRACT

Check = Callable[[Callable[[], Awaitable[Bus]]], Awaitable[None]]


async def memory_bus() -> Bus:
    bus = MemoryBus()
    await bus.open()
    return bus


@pytest.mark.parametrize("check", BUS_CONTRACT, ids=lambda c: c.__name__.removeprefix("check_"))
async def test_memory_bus(check: Check) -> None:
    await check(memory_bus)


@pytest.fixture
async def redis_buses(redis_server: str, bus_prefix: str) -> AsyncIterator[list[RedisBus]]:
    """Every Redis bus a check makes, closed afterwards (the checks close their own)."""
    made: list[RedisBus] = []
    yield made
    for bus in made:
        await bus.close()


@pytest.mark.parametrize("check", BUS_CONTRACT, ids=lambda c: c.__name__.removeprefix("check_"))
async def test_redis_bus(
    check: Check, redis_server: str, bus_prefix: str, redis_buses: list[RedisBus]
) -> None:
    async def redis_bus() -> Bus:
        bus = RedisBus(redis_server, node="contract", prefix=bus_prefix)
        redis_buses.append(bus)
        await bus.open()
        return bus

    await check(redis_bus)
