"""The bus contract (roomsync.testing.bus_contract) against every bus implementation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from roomsync.bus import Bus, MemoryBus
from roomsync.testing.bus_contract import BUS_CONTRACT


async def memory_bus() -> Bus:
    bus = MemoryBus()
    await bus.open()
    return bus


@pytest.mark.parametrize("check", BUS_CONTRACT, ids=lambda c: c.__name__.removeprefix("check_"))
async def test_memory_bus(check: Callable[[Callable[[], Awaitable[Bus]]], Awaitable[None]]) -> None:
    await check(memory_bus)
