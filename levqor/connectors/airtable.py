"""Airtable: create a record in a table.

Credential: `token` (a personal access token with data.records:write); `base_url`
replaces `https://api.airtable.com`. Airtable answers 429 without Retry-After and asks
clients to wait 30 seconds, so that is the wait the engine is given.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from pydantic import ConfigDict, Field

from levqor.connectors import http
from levqor.connectors.base import Action, Connector, ConnectorModel, StepContext, secret_field
from levqor.connectors.errors import RateLimitedError

API = "https://api.airtable.com"
RATE_LIMIT_WAIT_S = 30.0


class CreateRecord(ConnectorModel):
    model_config = ConfigDict(extra="forbid")

    base_id: str = Field(min_length=1, max_length=64, pattern=r"^app\w+$")
    table: str = Field(min_length=1, max_length=200, description="Table name or id.")
    fields: dict[str, Any] = Field(min_length=1)


async def run(
    _action: str, params: dict[str, Any], credential: dict[str, Any] | None, context: StepContext
) -> Any:
    record = CreateRecord.model_validate(params)
    token = secret_field(credential, "token", "airtable")
    base = (credential or {}).get("base_url") or API
    response = await http.send(
        context,
        "POST",
        f"{base}/v0/{record.base_id}/{quote(record.table, safe='')}",
        check=False,
        headers={"authorization": f"Bearer {token}"},
        json={"records": [{"fields": record.fields}], "typecast": True},
    )
    if response.status_code == 429:
        wait = http.retry_after(response) or RATE_LIMIT_WAIT_S
        raise RateLimitedError("airtable: rate limited", retry_after_s=wait)
    answer = http.body(response)
    error = answer.get("error") if isinstance(answer, dict) else None
    detail = error.get("message") if isinstance(error, dict) else error
    http.raise_for_status(response, detail=f"airtable: {detail or response.text[:200]}")
    [created] = answer["records"]
    return {"id": created["id"], "fields": created.get("fields", {})}


CONNECTOR = Connector(
    "airtable",
    {"create_record": Action("create_record", CreateRecord, "Add a record to a table.")},
    run,
    "Add records to Airtable.",
    credential_fields=("token",),
)
