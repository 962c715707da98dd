"""Google Sheets, Notion, Airtable and Stripe against a local peer answering as each does."""

from __future__ import annotations

from typing import Any

import pytest

from levqor.connectors import registry
from levqor.connectors.errors import ConnectorError, RateLimitedError
from tests.connectors.helpers import step_context


async def act(
    connector: str, action: str, params: dict[str, Any], credential: dict[str, Any]
) -> Any:
    async with step_context() as context:
        return await registry.get(connector).run(action, params, credential, context)


# --- Google Sheets -----------------------------------------------------------------------


async def test_sheets_appends_a_row(http_peer: Any) -> None:
    http_peer.reply(200, {"updates": {"updatedRange": "Orders!A7:C7", "updatedRows": 1}})
    output = await act(
        "google_sheets",
        "append_row",
        {"spreadsheet_id": "1AbC-dEf", "sheet": "Orders", "values": ["ada@example.org", 42, True]},
        {"access_token": "ya29.token", "base_url": http_peer.url},
    )
    assert output == {"updated_range": "Orders!A7:C7", "updated_rows": 1}
    [request] = http_peer.requests
    assert request["path"] == (
        "/v4/spreadsheets/1AbC-dEf/values/Orders:append"
        "?valueInputOption=USER_ENTERED&insertDataOption=INSERT_ROWS"
    )
    assert request["headers"]["authorization"] == "Bearer ya29.token"
    assert request["json"] == {"values": [["ada@example.org", 42, True]]}


async def test_sheets_expired_token_fails_with_googles_message(http_peer: Any) -> None:
    http_peer.reply(
        401, {"error": {"code": 401, "message": "Request had invalid authentication credentials."}}
    )
    with pytest.raises(ConnectorError, match="invalid authentication") as caught:
        await act(
            "google_sheets",
            "append_row",
            {"spreadsheet_id": "x", "values": [1]},
            {"access_token": "old", "base_url": http_peer.url},
        )
    assert not caught.value.retryable


# --- Notion ------------------------------------------------------------------------------


async def test_notion_creates_a_page_in_a_database(http_peer: Any) -> None:
    http_peer.reply(
        200, {"object": "page", "id": "59833787", "url": "https://www.notion.so/59833787"}
    )
    output = await act(
        "notion",
        "create_page",
        {"database_id": "d9824bdc-8445", "title": "Order 42", "content": "Paid by card"},
        {"token": "secret_ntn", "base_url": http_peer.url},
    )
    assert output == {"id": "59833787", "url": "https://www.notion.so/59833787"}
    [request] = http_peer.requests
    assert request["path"] == "/v1/pages"
    assert request["headers"]["notion-version"] == "2022-06-28"
    assert request["json"]["parent"] == {"database_id": "d9824bdc-8445"}
    assert request["json"]["properties"]["Name"]["title"][0]["text"]["content"] == "Order 42"
    assert request["json"]["children"][0]["paragraph"]["rich_text"][0]["text"]["content"] == (
        "Paid by card"
    )


async def test_notion_429_is_retried_after_its_retry_after(http_peer: Any) -> None:
    http_peer.reply(429, {"object": "error", "code": "rate_limited"}, headers={"Retry-After": "3"})
    with pytest.raises(RateLimitedError) as caught:
        await act(
            "notion",
            "create_page",
            {"database_id": "abc", "title": "x"},
            {"token": "t", "base_url": http_peer.url},
        )
    assert caught.value.retry_after_s == 3


# --- Airtable ----------------------------------------------------------------------------


async def test_airtable_creates_a_record(http_peer: Any) -> None:
    http_peer.reply(200, {"records": [{"id": "recX1", "fields": {"Email": "ada@example.org"}}]})
    output = await act(
        "airtable",
        "create_record",
        {"base_id": "appAbc123", "table": "Sign ups", "fields": {"Email": "ada@example.org"}},
        {"token": "patXYZ", "base_url": http_peer.url},
    )
    assert output == {"id": "recX1", "fields": {"Email": "ada@example.org"}}
    [request] = http_peer.requests
    assert request["path"] == "/v0/appAbc123/Sign%20ups"
    assert request["json"] == {
        "records": [{"fields": {"Email": "ada@example.org"}}],
        "typecast": True,
    }


async def test_airtable_429_waits_the_30_seconds_airtable_asks(http_peer: Any) -> None:
    http_peer.reply(429, {"errors": [{"error": "RATE_LIMIT_REACHED"}]})
    with pytest.raises(RateLimitedError) as caught:
        await act(
            "airtable",
            "create_record",
            {"base_id": "appA", "table": "t", "fields": {"a": 1}},
            {"token": "t", "base_url": http_peer.url},
        )
    assert caught.value.retry_after_s == 30


# --- Stripe ------------------------------------------------------------------------------


async def test_stripe_finds_a_customer_by_email(http_peer: Any) -> None:
    http_peer.reply(
        200,
        {"object": "list", "data": [{"id": "cus_1", "email": "ada@example.org", "name": "Ada"}]},
    )
    output = await act(
        "stripe",
        "find_customer",
        {"email": "ada@example.org"},
        {"secret_key": "sk_test_1", "base_url": http_peer.url},
    )
    assert output["found"] is True
    assert output["customer"]["id"] == "cus_1"
    [request] = http_peer.requests
    assert request["path"] == "/v1/customers?email=ada%40example.org&limit=1"
    assert request["headers"]["authorization"] == "Bearer sk_test_1"


async def test_stripe_payment_link_is_form_encoded(http_peer: Any) -> None:
    http_peer.reply(200, {"id": "plink_1", "url": "https://buy.stripe.com/test_1"})
    async with step_context() as context:
        output = await registry.get("stripe").run(
            "create_payment_link",
            {"price": "price_123", "quantity": 2},
            {"secret_key": "sk_test_1", "base_url": http_peer.url},
            context,
        )
    assert output == {"id": "plink_1", "url": "https://buy.stripe.com/test_1"}
    [request] = http_peer.requests
    assert request["path"] == "/v1/payment_links"
    assert request["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert request["form"] == {"line_items[0][price]": "price_123", "line_items[0][quantity]": "2"}


async def test_stripe_errors_carry_stripes_message(http_peer: Any) -> None:
    http_peer.reply(
        404, {"error": {"type": "invalid_request_error", "message": "No such customer: 'cus_9'"}}
    )
    with pytest.raises(ConnectorError, match="No such customer") as caught:
        await act(
            "stripe",
            "find_customer",
            {"customer_id": "cus_9"},
            {"secret_key": "sk", "base_url": http_peer.url},
        )
    assert not caught.value.retryable
