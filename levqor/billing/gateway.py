"""Stripe, behind the few calls billing and partners make.

The official SDK does the HTTP, retries (with idempotency keys) and signature checks;
`LEVQOR_STRIPE_API_BASE` points it at another server (a local peer in tests). It is
imported on first use: `levqor up` should not pay for loading it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from levqor import errors
from levqor.config import Settings

if TYPE_CHECKING:
    import stripe

# Stripe's own default: a signed event older than this is refused (replays).
SIGNATURE_TOLERANCE_S = 300


class BillingNotConfigured(errors.ServiceUnavailable):
    code = "billing_not_configured"


class StripeUnavailable(errors.LevqorError):
    """Stripe refused or did not answer; nothing was changed here."""

    status = 502
    code = "stripe_error"

    def __init__(self, detail: str, *, definite: bool = False) -> None:
        super().__init__(detail)
        # True: Stripe answered that it did nothing (a 4xx other than a conflict or a
        # rate limit). False: a 5xx, a timeout, a lost connection: it may have acted.
        self.definite = definite


class BadSignature(errors.InvalidRequest):
    code = "invalid_signature"


def _httpx_client(timeout_s: float) -> stripe.HTTPClient:
    """The SDK's httpx client, sending the encoded form as `content`: it passes a
    string as `data`, which httpx deprecates (a warning on every call)."""
    import stripe

    class FormAsContent(stripe.HTTPXClient):
        def _get_request_args_kwargs(self, *args: Any, **kwargs: Any) -> Any:
            positional, named = super()._get_request_args_kwargs(*args, **kwargs)
            named["content"] = named.pop("data", None) or None
            return positional, named

    return FormAsContent(timeout=timeout_s, allow_sync_methods=False)


class StripeGateway:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: stripe.StripeClient | None = None

    @property
    def client(self) -> stripe.StripeClient:
        if self._client is None:
            key = self._settings.stripe_secret_key
            if key is None:
                raise BillingNotConfigured("Stripe is not configured (LEVQOR_STRIPE_SECRET_KEY).")
            import stripe

            bases: Any = (
                {"api": self._settings.stripe_api_base} if self._settings.stripe_api_base else {}
            )
            self._client = stripe.StripeClient(
                key.get_secret_value(),
                base_addresses=bases,
                http_client=_httpx_client(self._settings.stripe_timeout_s),
                max_network_retries=2,
            )
        return self._client

    def verify_event(self, payload: bytes, signature: str | None) -> dict[str, Any]:
        """The event in a webhook body, if `Stripe-Signature` proves Stripe sent it."""
        secret = self._settings.stripe_webhook_secret
        if secret is None:
            raise BillingNotConfigured("Stripe webhooks are not configured.")
        import stripe

        try:
            stripe.WebhookSignature.verify_header(
                payload.decode(), signature or "", secret.get_secret_value(), SIGNATURE_TOLERANCE_S
            )
        except (stripe.SignatureVerificationError, UnicodeDecodeError) as exc:
            raise BadSignature("The Stripe-Signature header does not match the body.") from exc
        event = json.loads(payload)
        if not isinstance(event, dict) or "id" not in event or "type" not in event:
            raise errors.InvalidRequest("Not a Stripe event.")
        return event

    async def create_customer(self, *, email: str, user_id: str) -> str:
        customer = await self._call(
            "customers",
            {"email": email, "metadata": {"user_id": user_id}},
            idempotency_key=f"customer-{user_id}",
        )
        return _field(customer, "id")

    async def create_checkout(self, params: dict[str, Any]) -> tuple[str, str]:
        session = await self._call("checkout.sessions", params)
        return _field(session, "id"), _field(session, "url")

    async def portal(self, *, customer_id: str, return_url: str) -> str:
        """A Stripe customer portal session: change or cancel the plan, update the card,
        download invoices."""
        session = await self._call(
            "billing_portal.sessions", {"customer": customer_id, "return_url": return_url}
        )
        return _field(session, "url")

    async def cancel_subscription(self, subscription_id: str) -> None:
        """Cancel at once; one Stripe no longer knows (cancelled already) is done."""
        import stripe

        with _as_unavailable():
            try:
                await self.client.v1.subscriptions.cancel_async(subscription_id)
            except stripe.InvalidRequestError as exc:
                if exc.code != "resource_missing":
                    raise

    async def invoice_payment_intent(self, invoice_id: str) -> str | None:
        """The payment intent that paid an invoice (its first paid invoice payment)."""
        with _as_unavailable():
            listed = await self.client.v1.invoice_payments.list_async(
                {"invoice": invoice_id, "status": "paid", "limit": 1}
            )
        for paid in listed.data:
            intent = getattr(paid.payment, "payment_intent", None)
            if intent:
                return intent if isinstance(intent, str) else str(intent.id)
        return None

    async def refund(
        self, *, payment_intent: str, amount_cents: int, metadata: dict[str, str], key: str
    ) -> str:
        refund = await self._call(
            "refunds",
            {"payment_intent": payment_intent, "amount": amount_cents, "metadata": metadata},
            idempotency_key=key,
        )
        return _field(refund, "id")

    async def transfer(
        self, *, amount_cents: int, currency: str, destination: str, payout_id: str
    ) -> str:
        transfer = await self._call(
            "transfers",
            {
                "amount": amount_cents,
                "currency": currency,
                "destination": destination,
                "transfer_group": payout_id,
                "metadata": {"payout_id": payout_id},
            },
            idempotency_key=payout_id,
        )
        return _field(transfer, "id")

    async def create_connect_account(self, *, partner_id: str, email: str) -> str:
        """An Express connected account for a partner (once: keyed by the partner)."""
        account = await self._call(
            "accounts",
            {
                "type": "express",
                "email": email,
                "capabilities": {"transfers": {"requested": True}},
                "metadata": {"partner_id": partner_id},
            },
            idempotency_key=f"connect-{partner_id}",
        )
        return _field(account, "id")

    async def onboarding_link(self, *, account_id: str, refresh_url: str, return_url: str) -> str:
        """A single-use Stripe-hosted onboarding URL for a connected account."""
        link = await self._call(
            "account_links",
            {
                "account": account_id,
                "type": "account_onboarding",
                "refresh_url": refresh_url,
                "return_url": return_url,
            },
        )
        return _field(link, "url")

    async def find_transfer(self, payout_id: str) -> str | None:
        """The transfer made for a payout, if any (by its transfer group): how a payout
        is known to be paid once Stripe may have forgotten its idempotency key."""
        with _as_unavailable():
            listed = await self.client.v1.transfers.list_async(
                {"transfer_group": payout_id, "limit": 1}
            )
        try:
            return str(listed.data[0].id) if listed.data else None
        except (AttributeError, KeyError, TypeError) as exc:
            raise StripeUnavailable("Stripe answered something that is not a list.") from exc

    async def events_since(self, since: datetime, types: list[str]) -> list[dict[str, Any]]:
        """Every event of `types` Stripe created since `since`, oldest first, as the
        plain JSON a webhook delivers (Stripe keeps events 30 days)."""
        params: Any = {"created": {"gte": int(since.timestamp())}, "limit": 100}
        if types:
            params["types"] = types[:20]
        found = []
        with _as_unavailable():
            page = await self.client.v1.events.list_async(params)
            try:
                async for event in page.auto_paging_iter():
                    found.append(event.to_dict())
            except (AttributeError, KeyError, TypeError) as exc:
                raise StripeUnavailable(
                    "Stripe answered something that is not a list of events."
                ) from exc
        found = [event for event in found if isinstance(event.get("id"), str) and "type" in event]
        return sorted(found, key=lambda event: (event.get("created") or 0, event["id"]))

    async def _call(
        self, service_path: str, params: dict[str, Any], *, idempotency_key: str | None = None
    ) -> Any:
        service: Any = self.client.v1
        for part in service_path.split("."):
            service = getattr(service, part)
        options: Any = {"idempotency_key": idempotency_key} if idempotency_key else {}
        with _as_unavailable():
            return await service.create_async(params, options)


def _field(answer: Any, name: str) -> str:
    """A field Stripe's answer must carry; an answer without it is a Stripe failure (an
    unsure one: something may have been made), never a crash here."""
    try:
        value = answer[name]
    except (KeyError, TypeError, IndexError) as exc:
        raise StripeUnavailable(f"Stripe answered without `{name}`.") from exc
    if not value:
        raise StripeUnavailable(f"Stripe answered an empty `{name}`.")
    return str(value)


@contextmanager
def _as_unavailable() -> Iterator[None]:
    """Any error of Stripe's, as the 502 our callers answer with."""
    import stripe

    try:
        yield
    except stripe.StripeError as exc:
        status = exc.http_status or 0
        definite = 400 <= status < 500 and status not in (409, 429)
        raise StripeUnavailable(f"Stripe: {exc.user_message or exc}", definite=definite) from exc
