"""Stripe: look up a customer, create a payment link (REST, form-encoded).

Credential: `secret_key` (`sk_…` or a restricted `rk_…`); `base_url` replaces
`https://api.stripe.com`. Stripe's errors come as `{"error": {"type", "code",
"message"}}`; 429 (rate limits, lock timeouts) is retried, with backoff. Every POST
carries the step's idempotency key, so a retried step creates one payment link.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, EmailStr, Field, model_validator

from levqor.connectors import http
from levqor.connectors.base import Action, Connector, ConnectorModel, StepContext, secret_field
from levqor.connectors.errors import ConnectorError

API = "https://api.stripe.com"


class FindCustomer(ConnectorModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: str | None = Field(None, pattern=r"^cus_\w+$")
    email: EmailStr | None = None

    @model_validator(mode="after")
    def _one_key(self) -> FindCustomer:
        if (self.customer_id is None) == (self.email is None):
            raise ValueError("give either customer_id or email")
        return self


class CreatePaymentLink(ConnectorModel):
    model_config = ConfigDict(extra="forbid")

    price: str = Field(pattern=r"^price_\w+$", description="A Price id.")
    quantity: int = Field(1, ge=1, le=10_000)


async def run(
    action: str, params: dict[str, Any], credential: dict[str, Any] | None, context: StepContext
) -> Any:
    key = secret_field(credential, "secret_key", "stripe")
    base = ((credential or {}).get("base_url") or API) + "/v1"
    headers = {"authorization": f"Bearer {key}"}
    if action == "find_customer":
        lookup = FindCustomer.model_validate(params)
        if lookup.customer_id:
            found = await _call(context, "GET", f"{base}/customers/{lookup.customer_id}", headers)
            return {"found": True, "customer": _customer(found)}
        listed = await _call(
            context, "GET", f"{base}/customers", headers, params={"email": lookup.email, "limit": 1}
        )
        first = (listed.get("data") or [None])[0]
        return {"found": first is not None, "customer": _customer(first) if first else None}
    link = CreatePaymentLink.model_validate(params)
    created = await _call(
        context,
        "POST",
        f"{base}/payment_links",
        headers,
        data={"line_items[0][price]": link.price, "line_items[0][quantity]": str(link.quantity)},
    )
    return {"id": created["id"], "url": created["url"]}


async def _call(
    context: StepContext, method: str, url: str, headers: dict[str, str], **options: Any
) -> dict[str, Any]:
    if method == "POST":  # Stripe performs a POST once per key, however often it is sent
        headers = {**headers, "idempotency-key": context.idempotency_key}
    response = await http.send(context, method, url, check=False, headers=headers, **options)
    answer = http.body(response)
    error = answer.get("error", {}) if isinstance(answer, dict) else {}
    http.raise_for_status(response, detail=f"stripe: {error.get('message') or response.text[:200]}")
    if not isinstance(answer, dict):
        raise ConnectorError("stripe: the answer was not JSON")
    return answer


def _customer(found: dict[str, Any]) -> dict[str, Any]:
    return {key: found.get(key) for key in ("id", "email", "name", "created", "currency")}


CONNECTOR = Connector(
    "stripe",
    {
        "find_customer": Action(
            "find_customer", FindCustomer, "Look a customer up by id or e-mail."
        ),
        "create_payment_link": Action(
            "create_payment_link", CreatePaymentLink, "Create a payment link for a price."
        ),
    },
    run,
    "Work with your Stripe account.",
    credential_fields=("secret_key",),
)
