"""What a create-endpoint does with an `Idempotency-Key` (the dependency that builds it
for the signed-in user is `accounts.api_deps.IdempotencyDep`).

@router.post("/things", status_code=201)
async def create_thing(..., idempotency: IdempotencyDep) -> Any:
    if (replayed := await idempotency.replay()) is not None:
        return replayed
    answer = ...
    await idempotency.remember(201, answer)
    return answer
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.fernet import MultiFernet
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from levqor.idempotency import service


@dataclass
class Idempotency:
    session: AsyncSession
    runtime_cipher: MultiFernet
    user_id: str
    key: str | None
    fingerprint: str

    async def replay(self) -> JSONResponse | None:
        if self.key is None:
            return None
        stored = await service.lookup(
            self.session,
            user_id=self.user_id,
            key=self.key,
            fingerprint=self.fingerprint,
            cipher=self.runtime_cipher,
        )
        if stored is None:
            return None
        return JSONResponse(
            stored.body, status_code=stored.status_code, headers={"Idempotent-Replayed": "true"}
        )

    async def remember(self, status_code: int, body: Any) -> None:
        if self.key is None:
            return
        await service.remember(
            self.session,
            user_id=self.user_id,
            key=self.key,
            fingerprint=self.fingerprint,
            answer=service.StoredAnswer(status_code, body),
            cipher=self.runtime_cipher,
        )
