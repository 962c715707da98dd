"""Request and response bodies of the credentials API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field


class CredentialIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    connector: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=200)
    secret: dict[str, Any] = Field(
        min_length=1, description="The connector's secret fields; stored encrypted."
    )
    base_url: AnyHttpUrl | None = Field(
        None, description="Replaces the service's public address (self-hosted servers)."
    )


class CredentialRead(BaseModel):
    """A credential as listings show it: never the secret."""

    id: str
    connector: str
    name: str
    base_url: str | None
    created_at: datetime
