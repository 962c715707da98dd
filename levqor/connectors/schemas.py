"""Request and response bodies of the credentials API."""

from __future__ import annotations

from datetime import datetime

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, JsonValue

from levqor.jsonvalues import StorableJson


def _connector_names(schema: dict[str, JsonValue]) -> None:
    """The catalogue's names as the field's enum, read when the schema is built (the
    registry imports this package's modules, this one among them)."""
    from levqor.connectors import registry

    schema["enum"] = [*sorted(registry.CONNECTORS)]


class CredentialIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    connector: str = Field(min_length=1, max_length=64, json_schema_extra=_connector_names)
    name: str = Field(min_length=1, max_length=200)
    secret: dict[str, StorableJson] = Field(
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
