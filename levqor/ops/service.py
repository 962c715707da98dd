"""Health and readiness checks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sqlalchemy import text

from levqor.runtime import Runtime

CHECK_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Readiness:
    checks: dict[str, str]

    @property
    def ok(self) -> bool:
        return all(state == "ok" for state in self.checks.values())


async def readiness(runtime: Runtime) -> Readiness:
    checks = {"database": await _check_database(runtime)}
    if runtime.redis is not None:
        checks["redis"] = await _check_redis(runtime)
    return Readiness(checks)


async def _check_database(runtime: Runtime) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S), runtime.db.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001  any failure means "not ready", named
        return f"failed: {type(exc).__name__}"
    return "ok"


async def _check_redis(runtime: Runtime) -> str:
    assert runtime.redis is not None
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await runtime.redis.ping()
    except Exception as exc:  # noqa: BLE001  any failure means "not ready", named
        return f"failed: {type(exc).__name__}"
    return "ok"
