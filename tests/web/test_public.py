"""The public pages a visitor meets before signing up, and what search engines read."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import xmlschema

from levqor.runtime import Runtime
from levqor.web import public
from tests.conftest import serve_app
from tests.factories import make_admin

SCHEMA = Path(__file__).with_name("sitemap.xsd")


def csrf_of(page: httpx.Response) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, "the page has no CSRF field"
    return match.group(1)


async def test_the_landing_box_drafts_readable_steps(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    words = "When a webhook arrives, post it to Slack #sales"
    answer = await client.post(
        "/draft",
        data={"prompt": words, "csrf_token": csrf_of(page)},
        headers={"HX-Request": "true"},
    )
    assert answer.status_code == 200
    assert "When its webhook URL is called" in answer.text
    assert "<strong>Slack</strong>" in answer.text
    assert "#sales" in answer.text
    assert "<html" not in answer.text  # htmx gets the fragment alone
    assert '"connector"' not in answer.text  # readable steps, not raw JSON


async def test_without_javascript_the_draft_comes_back_in_the_whole_page(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/")
    answer = await client.post(
        "/draft",
        data={"prompt": "every day at 9am post to slack #team", "csrf_token": csrf_of(page)},
    )
    assert answer.status_code == 200
    assert "<html" in answer.text
    assert "Every day at 09:00 (UTC; cron 0 9 * * *)" in answer.text


async def test_the_landing_box_says_which_details_are_missing(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    answer = await client.post(
        "/draft",
        data={"prompt": "every monday open a github issue", "csrf_token": csrf_of(page)},
    )
    assert answer.status_code == 200
    assert "Every Monday at 09:00" in answer.text
    assert "Still to say:</strong> Which repository?" in answer.text
    assert "{{ input." not in answer.text  # the placeholder is not shown as a value


async def test_a_form_posted_without_its_csrf_token_is_refused(client: httpx.AsyncClient) -> None:
    await client.get("/")  # the browser has its cookie, but the form lacks the field
    missing = await client.post("/draft", data={"prompt": "post to slack #a"})
    forged = await client.post(
        "/draft", data={"prompt": "post to slack #a", "csrf_token": "x" * 43}
    )
    assert (missing.status_code, forged.status_code) == (403, 403)
    assert missing.headers["content-type"].startswith("text/html")  # a page, not JSON
    assert "That form could not be sent" in missing.text
    assert "Nothing was changed." in missing.text
    client.cookies.clear()  # a request from another site: no cookie at all
    assert (await client.post("/draft", data={"prompt": "post to slack #a"})).status_code == 403
    fragment = await client.post(
        "/draft", data={"prompt": "post to slack #a"}, headers={"HX-Request": "true"}
    )
    assert fragment.status_code == 403
    assert fragment.text.startswith('<p class="error" role="alert">This form has expired')


async def test_the_csrf_cookie_is_httponly_and_lax(client: httpx.AsyncClient) -> None:
    cookie = (await client.get("/pricing")).headers["set-cookie"]
    assert cookie.startswith("levqor_csrf=")
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # plain HTTP public URL: a Secure cookie would never return


async def test_pricing_lists_plans_packs_and_the_refund_guarantee(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/pricing")
    assert page.status_code == 200
    assert "7-day refund guarantee" in page.text
    assert "Starter" in page.text or "starter" in page.text.lower()
    assert "Verified customer" not in page.text  # no testimonials shipped: none invented


async def test_a_testimonial_is_verified_only_for_a_paying_account(
    client: httpx.AsyncClient,
    signup: Any,
    runtime: Runtime,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    payer, free = await signup(), await signup()
    await make_admin(runtime, payer)  # an admin, to record a payment through the API
    quotes = tmp_path / "testimonials.json"
    quotes.write_text(
        json.dumps(
            [
                {"quote": "Paid and happy", "who": "A. Payer", "account_email": payer.email},
                {"quote": "Free and happy", "who": "B. Free", "account_email": free.email},
                {"quote": "Anonymous praise", "who": "C. Nobody"},
            ]
        )
    )
    monkeypatch.setattr(public, "TESTIMONIALS_FILE", quotes)
    assert verified_quotes((await client.get("/pricing")).text) == []
    await record_payment(runtime, payer.id)
    page = (await client.get("/pricing")).text
    assert [quote for quote in ("Paid", "Free", "Anonymous") if quote in page] == [
        "Paid",
        "Free",
        "Anonymous",
    ]
    assert verified_quotes(page) == ["A. Payer"]


def verified_quotes(page: str) -> list[str]:
    """Who signs each quote marked verified."""
    names = []
    for figure in re.findall(r"<figure.*?</figure>", page, re.S):
        if "Verified customer" in figure:
            caption = re.sub(r"<[^>]+>|Verified customer", "", figure.split("<figcaption>")[1])
            names.append(caption.strip())
    return names


async def record_payment(runtime: Runtime, user_id: str) -> None:
    from levqor.billing.models import Payment

    async with runtime.db.write() as session, session.begin():
        session.add(
            Payment(
                user_id=user_id,
                kind="pack",
                product="small",
                amount_cents=900,
                currency="usd",
                credits=1000,
            )
        )


@pytest.mark.parametrize("page", ["refunds", "privacy", "terms"])
async def test_the_policies_are_pages(client: httpx.AsyncClient, page: str) -> None:
    response = await client.get(f"/legal/{page}")
    assert response.status_code == 200
    assert "<h1>" in response.text
    assert (await client.get("/legal/nonsense")).status_code == 404


async def test_robots_names_the_sitemap_and_keeps_private_pages_out(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    robots = await client.get("/robots.txt")
    assert robots.status_code == 200
    assert f"Sitemap: {runtime.settings.public_url}/sitemap.xml" in robots.text
    assert "Disallow: /app" in robots.text
    assert "Disallow: /admin" in robots.text


async def test_the_sitemap_is_valid_and_names_every_public_page(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    response = await client.get("/sitemap.xml")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    schema = xmlschema.XMLSchema(SCHEMA)
    schema.validate(response.text)  # raises on any violation
    document: Any = schema.to_dict(response.text)
    listed = {url["loc"]: url["lastmod"] for url in document["url"]}
    base = runtime.settings.public_url
    assert listed == {base + page.path: page.updated.isoformat() for page in public.PAGES}
    for page in public.PAGES:  # each listed page exists
        assert (await client.get(page.path)).status_code == 200


async def test_api_docs_load_from_this_server_under_the_strict_csp(
    client: httpx.AsyncClient,
) -> None:
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "cdn." not in docs.text
    scripts = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', docs.text)
    assert scripts
    assert all(url.startswith("/static/") for url in scripts)
    for url in scripts:
        assert (await client.get(url)).status_code == 200
    csp = docs.headers["content-security-policy"]
    assert "script-src 'self';" in csp
    assert "unsafe-inline" not in csp
    assert "<script>" not in docs.text  # nothing inline


async def test_plain_http_pages_do_not_ask_to_upgrade(
    client: httpx.AsyncClient, make_settings: Any, fresh_database: None
) -> None:
    plain = await client.get("/")
    assert "upgrade-insecure-requests" not in plain.headers["content-security-policy"]
    async with serve_app(make_settings(public_url="https://levqor.example.com")) as (https, _):
        secure = await https.get("/")
    assert "upgrade-insecure-requests" in secure.headers["content-security-policy"]
    assert "Secure" in secure.headers["set-cookie"]
