"""Sign-up, log-in and log-out through the pages: a cookie session, CSRF on every form,
the same rules as the API."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select

from levqor.accounts import resets
from levqor.accounts.models import User
from levqor.compliance.models import Consent
from levqor.db.base import utcnow
from levqor.partners.models import Referral
from levqor.runtime import Runtime
from levqor.web.session import ACCESS_COOKIE, REFRESH_COOKIE
from tests.conftest import PASSWORD, serve_app
from tests.factories import mail_settings


async def form_token(client: httpx.AsyncClient, path: str) -> str:
    page = await client.get(path)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


async def sign_up(client: httpx.AsyncClient, email: str, **extra: Any) -> httpx.Response:
    token = await form_token(client, "/signup")
    data = {"email": email, "password": PASSWORD, "csrf_token": token, **extra}
    return await client.post("/signup", data=data)


async def test_signing_up_opens_the_dashboard_with_a_cookie_session(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    answer = await sign_up(client, "page@example.com", name="Page", marketing_consent="true")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/app"
    cookies = answer.headers.get_list("set-cookie")
    for name in (ACCESS_COOKIE, REFRESH_COOKIE):
        [cookie] = [each for each in cookies if each.startswith(f"{name}=")]
        assert "HttpOnly" in cookie
        assert "samesite=lax" in cookie.lower()
    dashboard = await client.get("/app")
    assert dashboard.status_code == 200
    assert "page@example.com" in dashboard.text
    assert f"{runtime.settings.free_credits:,}" in dashboard.text
    async with runtime.db.read() as session:
        consent = await session.scalar(select(Consent))
    assert consent is not None
    assert (consent.granted, consent.source) == (True, "signup")


async def test_the_dashboard_sends_a_visitor_to_log_in(client: httpx.AsyncClient) -> None:
    answer = await client.get("/app")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=/app"


async def test_signup_errors_are_shown_at_their_field(client: httpx.AsyncClient) -> None:
    short = await sign_up(client, "short@example.com", password="short")
    assert short.status_code == 422
    assert 'id="password-problem"' in short.text
    assert 'value="short@example.com"' in short.text  # what was typed stays
    assert (await sign_up(client, "twice@example.com")).status_code == 303
    client.cookies.clear()
    again = await sign_up(client, "twice@example.com")
    assert again.status_code == 409
    assert 'id="email-problem"' in again.text


async def test_a_signup_form_without_its_token_is_refused(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await client.get("/signup")
    answer = await client.post("/signup", data={"email": "x@example.com", "password": PASSWORD})
    assert answer.status_code == 403
    async with runtime.db.read() as session:
        assert (await session.execute(select(Consent))).first() is None  # no account made


async def test_logging_in_and_out(client: httpx.AsyncClient, signup: Any) -> None:
    account = await signup("login@example.com")
    token = await form_token(client, "/login")
    wrong = await client.post(
        "/login", data={"email": account.email, "password": "nope-nope", "csrf_token": token}
    )
    assert wrong.status_code == 401
    assert 'role="alert"' in wrong.text
    right = await client.post(
        "/login",
        data={"email": account.email, "password": PASSWORD, "csrf_token": token, "next": "/app"},
    )
    assert (right.status_code, right.headers["location"]) == (303, "/app")
    assert (await client.get("/app")).status_code == 200
    refresh = client.cookies[REFRESH_COOKIE]
    logout_token = await form_token(client, "/app")
    out = await client.post("/logout", data={"csrf_token": logout_token})
    assert (out.status_code, out.headers["location"]) == (303, "/")
    assert (await client.get("/app")).status_code == 303
    client.cookies.set(REFRESH_COOKIE, refresh)  # the old login is revoked, not just forgotten
    assert (await client.get("/app")).status_code == 303


async def test_next_never_leaves_the_site(client: httpx.AsyncClient, signup: Any) -> None:
    account = await signup()
    token = await form_token(client, "/login")
    for target in ("//evil.example.com/", "https://evil.example.com/", "/\\evil.example.com"):
        answer = await client.post(
            "/login",
            data={
                "email": account.email,
                "password": PASSWORD,
                "csrf_token": token,
                "next": target,
            },
        )
        assert answer.headers["location"] == "/app"


async def test_an_expired_access_token_is_refreshed_on_the_next_page(
    client: httpx.AsyncClient,
) -> None:
    await sign_up(client, "refresh@example.com")
    old_refresh = client.cookies[REFRESH_COOKIE]
    client.cookies.set(ACCESS_COOKIE, "expired-or-garbage")
    page = await client.get("/app")
    assert page.status_code == 200
    assert "refresh@example.com" in page.text
    assert client.cookies[REFRESH_COOKIE] != old_refresh  # rotated, sent back with the page


async def test_two_pages_refreshing_at_once_keep_the_login(client: httpx.AsyncClient) -> None:
    """A run page polling while another tab opens, both after the access token expired:
    both present the same refresh token. The second is within the reuse grace window, so
    neither page is logged out and the login is not revoked as stolen."""
    await sign_up(client, "tabs@example.com")
    refresh = client.cookies[REFRESH_COOKIE]

    async def page_with(refresh_token: str) -> httpx.Response:
        client.cookies.clear()  # each tab sends what the browser held before either answer
        cookie = f"{ACCESS_COOKIE}=expired-or-garbage; {REFRESH_COOKIE}={refresh_token}"
        return await client.get("/app", headers={"cookie": cookie})

    first, second = await page_with(refresh), await page_with(refresh)
    assert (first.status_code, second.status_code) == (200, 200)
    assert "tabs@example.com" in first.text
    assert "tabs@example.com" in second.text
    later = await page_with(second.cookies[REFRESH_COOKIE])
    assert later.status_code == 200  # the login was not revoked
    assert "tabs@example.com" in later.text


async def test_the_referral_cookie_is_honoured(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    partner = await signup()
    code = (await client.post("/api/v1/partners", headers=partner.headers)).json()["code"]
    client.cookies.set("levqor_ref", code)
    assert (await sign_up(client, "referred@example.com")).status_code == 303
    async with runtime.db.read() as session:
        referrals = (await session.scalars(select(Referral))).all()
    assert len(referrals) == 1


def reset_link(message: Any) -> str:
    body = message.get_payload(decode=True).decode()
    match = re.search(r"(http://\S+/reset\?token=\S+)", body)
    assert match, body
    return match.group(1)


async def test_a_password_reset_link_works_once_and_ends_every_login(
    make_settings: Any, fresh_database: None, smtp_peer: Any
) -> None:
    settings = make_settings(**mail_settings(smtp_peer))
    async with serve_app(settings) as (client, _runtime):
        await sign_up(client, "forgetful@example.com")
        old_refresh = client.cookies[REFRESH_COOKIE]
        client.cookies.clear()
        token = await form_token(client, "/forgot")
        asked = await client.post(
            "/forgot", data={"email": "Forgetful@Example.com", "csrf_token": token}
        )
        assert asked.status_code == 200
        [sent] = smtp_peer.messages
        assert sent["to"] == ["forgetful@example.com"]
        link = reset_link(sent["message"])
        assert link.startswith(settings.public_url)
        path = link.removeprefix(settings.public_url)
        form = await client.get(path)
        assert form.status_code == 200
        reset_token = re.search(r'name="token" value="([^"]+)"', form.text)
        assert reset_token
        data = {"token": reset_token.group(1), "csrf_token": token}
        done = await client.post("/reset", data={**data, "password": "a brand new secret"})
        assert (done.status_code, done.headers["location"]) == (303, "/login?changed=1")
        again = await client.post("/reset", data={**data, "password": "another new secret"})
        assert again.status_code == 400  # used: the link died with the old password
        assert (await client.get(path)).status_code == 400
        login = {"email": "forgetful@example.com", "csrf_token": token}
        old = await client.post("/login", data={**login, "password": PASSWORD})
        assert old.status_code == 401
        new = await client.post("/login", data={**login, "password": "a brand new secret"})
        assert new.status_code == 303
        client.cookies.clear()
        client.cookies.set(REFRESH_COOKIE, old_refresh)  # the login from before the reset
        assert (await client.get("/app")).status_code == 303


async def test_asking_for_an_unknown_address_says_the_same_and_sends_nothing(
    make_settings: Any, fresh_database: None, smtp_peer: Any
) -> None:
    async with serve_app(make_settings(**mail_settings(smtp_peer))) as (client, _runtime):
        await sign_up(client, "known@example.com")
        token = await form_token(client, "/forgot")
        known = await client.post(
            "/forgot", data={"email": "known@example.com", "csrf_token": token}
        )
        unknown = await client.post(
            "/forgot", data={"email": "stranger@example.com", "csrf_token": token}
        )
    assert known.status_code == unknown.status_code == 200
    assert known.text.replace("known@", "X@") == unknown.text.replace("stranger@", "X@")
    assert len(smtp_peer.messages) == 1


async def test_an_expired_or_forged_link_is_refused(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await sign_up(client, "late@example.com")
    async with runtime.db.read() as session:
        user = await session.scalar(select(User))
    assert user is not None
    stale = resets.issue(runtime.auth, user, now=utcnow() - timedelta(hours=2))
    assert (await client.get(f"/reset?token={stale}")).status_code == 400
    assert (await client.get("/reset?token=not-a-token")).status_code == 400
    fresh = resets.issue(runtime.auth, user, now=utcnow())
    assert (await client.get(f"/reset?token={fresh}")).status_code == 200
    access = client.cookies[ACCESS_COOKIE]  # a login token is no reset link
    assert (await client.get(f"/reset?token={access}")).status_code == 400


async def test_without_smtp_the_page_says_it_cannot_send(client: httpx.AsyncClient) -> None:
    token = await form_token(client, "/forgot")
    answer = await client.post("/forgot", data={"email": "x@example.com", "csrf_token": token})
    assert answer.status_code == 503
    assert "does not send e-mail" in answer.text
