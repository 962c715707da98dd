"""Notion: create a page in a database.

Credential: `token` (an integration token, shared with the database); `base_url`
replaces `https://api.notion.com`. Sent with `Notion-Version: 2022-06-28`. Notion
answers 429 with Retry-After, which the engine honours.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from levqor.connectors import http
from levqor.connectors.base import Action, Connector, ConnectorModel, StepContext, secret_field

API = "https://api.notion.com"
VERSION = "2022-06-28"


class CreatePage(ConnectorModel):
    model_config = ConfigDict(extra="forbid")

    database_id: str = Field(min_length=1, max_length=64, pattern=r"^[\w-]+$")
    title: str = Field(min_length=1, max_length=2000)
    title_property: str = Field("Name", max_length=200, description="The title column.")
    properties: dict[str, Any] = Field(
        default_factory=dict, description="More property values, in Notion's own format."
    )
    content: str | None = Field(None, max_length=2000, description="A first paragraph.")


async def run(
    _action: str, params: dict[str, Any], credential: dict[str, Any] | None, context: StepContext
) -> Any:
    page = CreatePage.model_validate(params)
    token = secret_field(credential, "token", "notion")
    body: dict[str, Any] = {
        "parent": {"database_id": page.database_id},
        "properties": {
            **page.properties,
            page.title_property: {"title": [{"text": {"content": page.title}}]},
        },
    }
    if page.content:
        body["children"] = [
            {
                "object": "block",
                "type": "paragraph",
                "paragraph": {"rich_text": [{"text": {"content": page.content}}]},
            }
        ]
    response = await http.send(
        context,
        "POST",
        f"{(credential or {}).get('base_url') or API}/v1/pages",
        check=False,
        headers={"authorization": f"Bearer {token}", "notion-version": VERSION},
        json=body,
    )
    answer = http.body(response)
    detail = answer.get("message") if isinstance(answer, dict) else None
    http.raise_for_status(response, detail=f"notion: {detail or response.text[:200]}")
    return {"id": answer.get("id"), "url": answer.get("url")}


CONNECTOR = Connector(
    "notion",
    {"create_page": Action("create_page", CreatePage, "Add a page to a database.")},
    run,
    "Add pages to Notion databases.",
    credential_fields=("token",),
)
