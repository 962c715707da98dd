"""The connector catalogue (what steps can do, each action's params schema) and the
credentials vault."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel

from levqor.accounts.api_deps import CurrentUser
from levqor.connectors import registry, service
from levqor.connectors.models import Credential
from levqor.connectors.schemas import CredentialIn, CredentialRead
from levqor.deps import Cursor, Limit, RuntimeDep, SessionDep
from levqor.types import Page

router = APIRouter(prefix="/api/v1", tags=["connectors"])


class ActionRead(BaseModel):
    name: str
    description: str
    params_schema: dict[str, Any]


class ConnectorRead(BaseModel):
    name: str
    description: str
    credential_fields: list[str]
    actions: list[ActionRead]


@router.get("/connectors")
async def catalogue(_principal: CurrentUser) -> list[ConnectorRead]:
    return [
        ConnectorRead(
            name=connector.name,
            description=connector.description,
            credential_fields=list(connector.credential_fields),
            actions=[
                ActionRead(
                    name=action.name,
                    description=action.description,
                    params_schema=action.params.model_json_schema(by_alias=True),
                )
                for action in connector.actions.values()
            ],
        )
        for connector in sorted(registry.CONNECTORS.values(), key=lambda c: c.name)
    ]


@router.post("/credentials", status_code=201)
async def create_credential(
    body: CredentialIn, principal: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> CredentialRead:
    credential = await service.create(
        session,
        user_id=principal.user.id,
        connector=body.connector,
        name=body.name,
        secret=body.secret,
        base_url=str(body.base_url).rstrip("/") if body.base_url else None,
        cipher=runtime.cipher,
    )
    return _read(credential)


@router.get("/credentials")
async def list_credentials(
    principal: CurrentUser, session: SessionDep, limit: Limit = 100, cursor: Cursor = None
) -> Page[CredentialRead]:
    credentials, next_cursor = await service.list_for_user(
        session, user_id=principal.user.id, limit=limit, cursor=cursor
    )
    return Page(data=[_read(credential) for credential in credentials], next_cursor=next_cursor)


@router.delete("/credentials/{credential_id}", status_code=204)
async def delete_credential(
    credential_id: str, principal: CurrentUser, session: SessionDep
) -> Response:
    await service.delete(session, user_id=principal.user.id, credential_id=credential_id)
    return Response(status_code=204)


def _read(credential: Credential) -> CredentialRead:
    return CredentialRead(
        id=credential.id,
        connector=credential.connector,
        name=credential.name,
        base_url=credential.base_url,
        created_at=credential.created_at,
    )
