"""Read requests with the same credential share one load of their caller, and only a load
begun after they arrived: a change committed before a request is never hidden from it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from levqor.accounts.coalesce import ReadCoalescer
from levqor.accounts.errors import InvalidToken


async def until(condition: Callable[[], bool]) -> None:
    """Let the other tasks run until `condition` holds (a bounded number of turns)."""
    for _ in range(1_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


class Store:
    """A value loads read; `hold` keeps each load open until released."""

    def __init__(self) -> None:
        self.value = 1
        self.loads: list[int] = []
        self.hold = asyncio.Event()
        self.hold.set()

    async def load(self) -> int:
        seen = self.value
        self.loads.append(seen)
        await self.hold.wait()
        return seen


async def test_requests_that_wait_together_share_one_load() -> None:
    coalescer: ReadCoalescer[int] = ReadCoalescer()
    store = Store()
    answers = await asyncio.gather(*(coalescer.read("token", store.load) for _ in range(20)))
    assert answers == [1] * 20
    assert store.loads == [1]
    assert len(coalescer) == 0


async def test_a_request_never_joins_a_load_already_running() -> None:
    coalescer: ReadCoalescer[int] = ReadCoalescer()
    store = Store()
    store.hold.clear()
    first = asyncio.create_task(coalescer.read("token", store.load))
    await until(lambda: store.loads == [1])  # the first load has read the value
    store.value = 2  # then a change commits (a key deleted, a role changed)
    later = [asyncio.create_task(coalescer.read("token", store.load)) for _ in range(5)]
    await until(lambda: all(not task.done() for task in later))
    assert store.loads == [1]  # the later requests wait for the next load
    store.hold.set()
    assert await first == 1
    assert await asyncio.gather(*later) == [2] * 5  # they all see the change
    assert store.loads == [1, 2]  # and shared one load for it
    assert len(coalescer) == 0


async def test_distinct_credentials_do_not_wait_for_each_other() -> None:
    coalescer: ReadCoalescer[int] = ReadCoalescer()
    held, free = Store(), Store()
    held.hold.clear()
    blocked = asyncio.create_task(coalescer.read("a", held.load))
    await until(lambda: held.loads == [1])
    assert await coalescer.read("b", free.load) == 1
    assert not blocked.done()
    held.hold.set()
    assert await blocked == 1


async def test_a_failed_load_fails_its_requests_and_the_next_request_loads_again() -> None:
    coalescer: ReadCoalescer[int] = ReadCoalescer()
    calls = 0

    async def refuse() -> int:
        nonlocal calls
        calls += 1
        raise InvalidToken("The token has been revoked.")

    results = await asyncio.gather(
        *(coalescer.read("token", refuse) for _ in range(3)), return_exceptions=True
    )
    assert [type(result) for result in results] == [InvalidToken] * 3
    with pytest.raises(InvalidToken):
        await coalescer.read("token", refuse)
    assert calls == 2
    assert len(coalescer) == 0


async def test_a_request_that_goes_away_leaves_the_load_to_the_others() -> None:
    coalescer: ReadCoalescer[int] = ReadCoalescer()
    store = Store()
    store.hold.clear()
    gone = asyncio.create_task(coalescer.read("token", store.load))
    staying = asyncio.create_task(coalescer.read("token", store.load))
    await until(lambda: store.loads == [1])
    gone.cancel()
    store.hold.set()
    assert await staying == 1
    assert gone.cancelled()
    assert len(coalescer) == 0


async def test_concurrent_reads_with_one_key_answer_each_and_a_deleted_key_stops_at_once(
    client: httpx.AsyncClient, signup: Any
) -> None:
    account = await signup()
    created = (
        await client.post("/api/v1/api-keys", json={"name": "poller"}, headers=account.headers)
    ).json()
    key = {"X-API-Key": created["key"]}
    answers = await asyncio.gather(*(client.get("/api/v1/me", headers=key) for _ in range(25)))
    assert {answer.status_code for answer in answers} == {200}
    assert {answer.json()["id"] for answer in answers} == {account.id}

    deleted = asyncio.Event()
    after_delete: list[int] = []

    async def poll() -> None:
        while len(after_delete) < 40:
            started_after_delete = deleted.is_set()
            answer = await client.get("/api/v1/me", headers=key)
            if started_after_delete:
                after_delete.append(answer.status_code)

    pollers = [asyncio.create_task(poll()) for _ in range(8)]
    await until(lambda: True)
    gone = await client.delete(f"/api/v1/api-keys/{created['id']}", headers=account.headers)
    assert gone.status_code == 204
    deleted.set()
    await asyncio.gather(*pollers)
    assert set(after_delete) == {401}
