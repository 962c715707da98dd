"""Read requests that wait together have their callers loaded together, and only by a load
begun after they arrived: a change committed before a request is never hidden from it."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from levqor.accounts.coalesce import BatchReader
from levqor.accounts.models import TokenFamily, User
from levqor.db.base import utcnow
from levqor.runtime import Runtime
from tests.conftest import assert_problem


async def until(condition: Callable[[], bool]) -> None:
    """Let the other tasks run until `condition` holds (a bounded number of turns)."""
    for _ in range(1_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


class Store:
    """Values by key that loads read; `hold` keeps each load open until released."""

    def __init__(self) -> None:
        self.values = {"a": 1, "b": 10}
        self.loads: list[list[str]] = []
        self.hold = asyncio.Event()
        self.hold.set()

    async def load_many(self, keys: Sequence[str]) -> dict[str, int]:
        self.loads.append(list(keys))
        seen = {key: self.values[key] for key in keys if key in self.values}
        await self.hold.wait()
        return seen


async def test_requests_that_wait_together_share_one_load() -> None:
    batches: BatchReader[str, int] = BatchReader()
    store = Store()
    keys = ["a", "b", "a", "missing"] * 5
    answers = await asyncio.gather(*(batches.read(key, store.load_many) for key in keys))
    assert answers == [1, 10, 1, None] * 5
    assert store.loads == [["a", "b", "missing"]]  # one load, each key once, in order
    assert batches.idle


async def test_a_full_batch_leaves_the_next_requests_to_the_load_after_it() -> None:
    batches: BatchReader[str, int] = BatchReader(max_keys=2)
    store = Store()
    store.values.update(c=100, d=1000)
    keys = ["a", "b", "a", "c", "d", "b"]
    answers = await asyncio.gather(*(batches.read(key, store.load_many) for key in keys))
    assert answers == [1, 10, 1, 100, 1000, 10]
    # "b" came again after its batch was full: it waits for a later load, never an
    # earlier one, and loads run one after another in the order their batches filled
    assert store.loads == [["a", "b"], ["c", "d"], ["b"]]
    assert batches.idle


async def test_a_request_never_joins_a_load_already_running() -> None:
    batches: BatchReader[str, int] = BatchReader()
    store = Store()
    store.hold.clear()
    first = asyncio.create_task(batches.read("a", store.load_many))
    await until(lambda: store.loads == [["a"]])  # the first load has read the values
    store.values["a"] = 2  # then a change commits (a key deleted, a role changed)
    later = [asyncio.create_task(batches.read(key, store.load_many)) for key in "aab"]
    await until(lambda: all(not task.done() for task in later))
    assert store.loads == [["a"]]  # the later requests wait for the next load
    store.hold.set()
    assert await first == 1
    assert await asyncio.gather(*later) == [2, 2, 10]  # they all see the change
    assert store.loads == [["a"], ["a", "b"]]  # and shared one load for it
    assert batches.idle


async def test_a_failed_load_fails_its_requests_and_the_next_request_loads_again() -> None:
    batches: BatchReader[str, int] = BatchReader()
    calls = 0

    async def fail(keys: Sequence[str]) -> dict[str, int]:
        nonlocal calls
        calls += 1
        raise ConnectionError("the database went away")

    results = await asyncio.gather(
        *(batches.read(key, fail) for key in "abc"), return_exceptions=True
    )
    assert [type(result) for result in results] == [ConnectionError] * 3
    with pytest.raises(ConnectionError):
        await batches.read("a", fail)
    assert calls == 2
    assert batches.idle


async def test_a_request_that_goes_away_leaves_the_load_to_the_others() -> None:
    batches: BatchReader[str, int] = BatchReader()
    store = Store()
    store.hold.clear()
    gone = asyncio.create_task(batches.read("a", store.load_many))
    staying = asyncio.create_task(batches.read("b", store.load_many))
    await until(lambda: store.loads == [["a", "b"]])
    gone.cancel()
    store.hold.set()
    assert await staying == 10
    assert gone.cancelled()
    assert batches.idle


async def test_concurrent_reads_of_many_callers_each_get_their_own(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    accounts = [await signup() for _ in range(7)]
    revoked, deactivated = accounts[-2:]
    # As another process would: this one's memory of revocations does not know.
    async with runtime.db.session(write=True) as session:
        await session.execute(
            update(TokenFamily).where(TokenFamily.user_id == revoked.id).values(revoked_at=utcnow())
        )
        await session.execute(update(User).where(User.id == deactivated.id).values(is_active=False))
        await session.commit()
    requests = [account for account in accounts for _ in range(4)]
    random.Random(7).shuffle(requests)
    answers = await asyncio.gather(
        *(client.get("/api/v1/me", headers=account.headers) for account in requests)
    )
    for account, answer in zip(requests, answers, strict=True):
        if account in (revoked, deactivated):
            assert_problem(answer, 401, "invalid_token")
        else:
            assert answer.status_code == 200
            assert (answer.json()["id"], answer.json()["email"]) == (account.id, account.email)


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
