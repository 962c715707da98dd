"""Google Sheets: append a row through the Sheets API (values.append).

Credential: `access_token` (an OAuth 2.0 access token with the spreadsheets scope; this
connector does not refresh it). `base_url` replaces `https://sheets.googleapis.com`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from pydantic import ConfigDict, Field

from levqor.connectors import http
from levqor.connectors.base import Action, Connector, ConnectorModel, StepContext, secret_field

API = "https://sheets.googleapis.com"


class AppendRow(ConnectorModel):
    model_config = ConfigDict(extra="forbid")

    spreadsheet_id: str = Field(min_length=1, max_length=200, pattern=r"^[\w-]+$")
    sheet: str = Field("Sheet1", min_length=1, max_length=200, description="Tab or A1 range.")
    values: list[Any] = Field(min_length=1, max_length=1000, description="One row's cells.")


async def run(
    _action: str, params: dict[str, Any], credential: dict[str, Any] | None, context: StepContext
) -> Any:
    row = AppendRow.model_validate(params)
    token = secret_field(credential, "access_token", "google_sheets")
    base = (credential or {}).get("base_url") or API
    response = await http.send(
        context,
        "POST",
        f"{base}/v4/spreadsheets/{row.spreadsheet_id}/values/{quote(row.sheet, safe='')}:append",
        check=False,
        params={"valueInputOption": "USER_ENTERED", "insertDataOption": "INSERT_ROWS"},
        headers={"authorization": f"Bearer {token}"},
        json={"values": [row.values]},
    )
    answer = http.body(response)
    error = answer.get("error", {}) if isinstance(answer, dict) else {}
    http.raise_for_status(
        response, detail=f"google sheets: {error.get('message') or response.text[:200]}"
    )
    updates = answer.get("updates", {}) if isinstance(answer, dict) else {}
    return {
        "updated_range": updates.get("updatedRange"),
        "updated_rows": updates.get("updatedRows"),
    }


CONNECTOR = Connector(
    "google_sheets",
    {"append_row": Action("append_row", AppendRow, "Add a row at the end of a sheet.")},
    run,
    "Add rows to Google Sheets.",
    credential_fields=("access_token",),
)
