"""Running one connector action against a local peer, as the engine would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from levqor.connectors import registry, safety
from levqor.connectors.base import StepContext


@asynccontextmanager
async def step_context(
    job_id: str = "job_test", step_id: str = "step"
) -> AsyncIterator[StepContext]:
    client = safety.guarded_client(["127.0.0.1/32"])
    try:
        yield StepContext(http=client, job_id=job_id, step_id=step_id, data={}, timeout_s=5)
    finally:
        await client.aclose()


async def run_action(
    connector: str,
    params: dict[str, Any],
    credential: dict[str, Any] | None,
    action_name: str | None = None,
    **context: str,
) -> Any:
    found = registry.get(connector)
    action = registry.resolve(connector, action_name)
    async with step_context(**context) as ctx:
        return await found.run(action.name, params, credential, ctx)
