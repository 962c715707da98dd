"""Outbound webhook: POST a JSON payload signed per the Standard Webhooks spec.

Credential (optional): `signing_secret` (`whsec_…`, base64 after the prefix); without
one the request goes unsigned (still with `webhook-id` and `webhook-timestamp`). The
`webhook-id` is derived from the job and step, so a retried step sends the same id and
the receiver can drop the duplicate.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ConfigDict, Field
from standardwebhooks.webhooks import Webhook

from levqor.connectors import http
from levqor.connectors.base import Action, Connector, ConnectorModel, StepContext
from levqor.connectors.errors import ConnectorError
from levqor.db.base import utcnow


class Send(ConnectorModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=4096)
    payload: Any = Field(description="Any JSON; sent as the body.")
    headers: dict[str, str] = Field(default_factory=dict)


async def run(
    _action: str, params: dict[str, Any], credential: dict[str, Any] | None, context: StepContext
) -> Any:
    request = Send.model_validate(params)
    body = orjson.dumps(request.payload).decode()
    # The same on every try of the step (Standard Webhooks receivers dedupe on it).
    message_id = "msg_" + context.idempotency_key.removeprefix("lvq_")[:24]
    now = utcnow()
    headers = {
        **request.headers,
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
    }
    secret = (credential or {}).get("signing_secret")
    if secret:
        try:
            headers["webhook-signature"] = Webhook(secret).sign(message_id, now, body)
        except Exception as exc:  # a malformed secret: the credential must be fixed
            raise ConnectorError("webhook: the signing_secret is not a whsec_ secret") from exc
    response = await http.send(context, "POST", request.url, content=body, headers=headers)
    return {"status": response.status_code, "webhook_id": message_id, "body": http.body(response)}


CONNECTOR = Connector(
    "webhook",
    {"send": Action("send", Send, "POST a signed JSON payload to a URL.")},
    run,
    "Call any endpoint with a Standard Webhooks signature.",
    credential_fields=("signing_secret",),
)
