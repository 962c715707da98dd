"""The `Idempotency` dependency a create-endpoint takes.

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
from typing import Annotated, Any

from cryptography.fernet import MultiFernet
from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from levqor.accounts.api_deps import CurrentUser
from levqor.deps import RuntimeDep, SessionDep
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


async def get_idempotency(
    request: Request, principal: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> Idempotency:
    raw_key = request.headers.get("idempotency-key")
    key = service.validate_key(raw_key) if raw_key is not None else None
    body = await request.body() if key is not None else b""
    return Idempotency(
        session=session,
        runtime_cipher=runtime.cipher,
        user_id=principal.user.id,
        key=key,
        fingerprint=service.request_fingerprint(request.method, request.url.path, body),
    )


IdempotencyDep = Annotated[Idempotency, Depends(get_idempotency)]
