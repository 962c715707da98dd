"""The connector catalogue: what steps can do, with each action's params schema."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from levqor.accounts.api_deps import CurrentUser
from levqor.connectors import registry

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
