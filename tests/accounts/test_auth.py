"""Signup, login, tokens: what a client of the auth API sees."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select

from levqor.accounts.models import LoginFailure, TokenFamily, User
from levqor.accounts.tokens import AccessTokens
from levqor.audit.models import AuditEntry
from levqor.config import Settings
from levqor.db.base import utcnow
from levqor.runtime import Runtime
from tests.conftest import PASSWORD, assert_problem, serve_app


async def test_signup_returns_user_and_tokens(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/auth/signup",
        json={"email": "Ada@Example.COM", "password": PASSWORD, "name": "Ada"},
    )
    assert response.status_code == 201
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    assert body["refresh_token"].startswith("lvr_")
    assert body["user"]["email"] == "ada@example.com"
    assert body["user"]["id"].startswith("usr_")
    assert body["user"]["credits"] == 50
    assert "password" not in json.dumps(body)


async def test_me_returns_the_user(client: httpx.AsyncClient, signup: Any) -> None:
    account = await signup(name="Grace")
    response = await client.get("/api/v1/me", headers=account.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == account.id
    assert body["email"] == account.email
    assert body["name"] == "Grace"
    assert body["plan"] == "free"
    assert body["credits"] == 50
    assert body["created_at"].endswith("Z") or body["created_at"].endswith("+00:00")


async def test_free_credits_follow_the_setting(make_settings: Any, fresh_database: None) -> None:
    settings = make_settings(free_credits=7)
    async with serve_app(settings) as (c, _runtime):
        response = await c.post(
            "/api/v1/auth/signup", json={"email": "c@example.com", "password": PASSWORD}
        )
    assert response.json()["user"]["credits"] == 7


async def test_duplicate_email_in_any_case_is_409(client: httpx.AsyncClient, signup: Any) -> None:
    await signup("dup@example.com")
    response = await client.post(
        "/api/v1/auth/signup", json={"email": "DUP@example.com", "password": PASSWORD}
    )
    assert_problem(response, 409, "email_taken")


@pytest.mark.parametrize("email", ["not-an-email", "a@b", "two@@example.com", ""])
async def test_invalid_email_is_refused(client: httpx.AsyncClient, email: str) -> None:
    response = await client.post("/api/v1/auth/signup", json={"email": email, "password": PASSWORD})
    assert response.status_code in (400, 422)
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_short_password_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/auth/signup", json={"email": "s@example.com", "password": "short"}
    )
    body = assert_problem(response, 422, "invalid_request")
    assert body["errors"][0]["field"] == "password"


async def test_login_with_right_password(client: httpx.AsyncClient, signup: Any) -> None:
    account = await signup()
    response = await client.post(
        "/api/v1/auth/login", json={"email": account.email.upper(), "password": PASSWORD}
    )
    assert response.status_code == 200
    tokens = response.json()
    me = await client.get(
        "/api/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.json()["id"] == account.id


async def test_unknown_user_and_wrong_password_look_the_same(
    client: httpx.AsyncClient, signup: Any
) -> None:
    account = await signup()
    wrong = await client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": "not the password"}
    )
    unknown = await client.post(
        "/api/v1/auth/login", json={"email": "ghost@example.com", "password": "whatever1"}
    )
    assert_problem(wrong, 401, "invalid_credentials")
    assert_problem(unknown, 401, "invalid_credentials")
    assert wrong.json() == unknown.json()


async def test_unknown_user_costs_a_password_hash_too(
    client: httpx.AsyncClient, signup: Any
) -> None:
    """Timing: both paths run argon2 (a lookup-only path would answer ~100x faster)."""
    account = await signup()

    async def timed(email: str) -> float:
        started = time.perf_counter()
        await client.post("/api/v1/auth/login", json={"email": email, "password": "nope-nope"})
        return time.perf_counter() - started

    known = min([await timed(account.email) for _ in range(3)])
    unknown = min([await timed("ghost@example.com") for _ in range(3)])
    assert unknown > known * 0.5


async def test_five_failures_make_that_source_wait_a_growing_delay(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    for _ in range(5):
        response = await client.post(
            "/api/v1/auth/login", json={"email": account.email, "password": "bad-password"}
        )
        assert response.status_code == 401
    waiting = await client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": PASSWORD}
    )
    assert_problem(waiting, 429, "login_locked")
    assert int(waiting.headers["retry-after"]) == 1
    delays = []
    for _ in range(4):  # each failure past the limit doubles the wait
        await age_login_failures(runtime, timedelta(seconds=20))
        wrong = await client.post(
            "/api/v1/auth/login", json={"email": account.email, "password": "bad-password"}
        )
        assert wrong.status_code == 401
        waiting = await client.post(
            "/api/v1/auth/login", json={"email": account.email, "password": PASSWORD}
        )
        delays.append(int(waiting.headers["retry-after"]))
    assert delays == [2, 4, 8, 16]
    async with runtime.db.read() as session:
        failures = await session.scalar(select(func.count()).select_from(LoginFailure))
    assert failures == 9  # attempts while waiting do not count


async def age_login_failures(runtime: Runtime, by: timedelta) -> None:
    async with runtime.db.write() as session, session.begin():
        for failure in (await session.scalars(select(LoginFailure))).all():
            failure.failed_at -= by


async def test_a_stranger_cannot_lock_the_owner_out(
    app: Any, client: httpx.AsyncClient, signup: Any
) -> None:
    """Failures from one IP slow that IP down; the owner on another IP, or on the
    attacker's IP with a device that signed in before, gets in at once."""
    account = await signup()
    known = await client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": PASSWORD}
    )
    device = known.cookies["levqor_device"]
    attacker = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("203.0.113.9", 4000)),
        base_url="http://testserver",
    )
    async with attacker:
        for _ in range(8):
            await attacker.post(
                "/api/v1/auth/login", json={"email": account.email, "password": "guess-guess"}
            )
        blocked = await attacker.post(
            "/api/v1/auth/login", json={"email": account.email, "password": PASSWORD}
        )
        assert_problem(blocked, 429, "login_locked")
        attacker.cookies.set("levqor_device", device)
        on_known_device = await attacker.post(
            "/api/v1/auth/login", json={"email": account.email, "password": PASSWORD}
        )
        assert on_known_device.status_code == 200
        attacker.cookies.clear()
        attacker.cookies.set("levqor_device", "forged.device")
        forged = await attacker.post(
            "/api/v1/auth/login", json={"email": account.email, "password": PASSWORD}
        )
        assert_problem(forged, 429, "login_locked")
    elsewhere = await client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": PASSWORD}
    )
    assert elsewhere.status_code == 200


async def test_lock_applies_to_unknown_accounts_too(client: httpx.AsyncClient) -> None:
    for _ in range(5):
        await client.post(
            "/api/v1/auth/login", json={"email": "ghost@example.com", "password": "guess-guess"}
        )
    locked = await client.post(
        "/api/v1/auth/login", json={"email": "ghost@example.com", "password": "guess-guess"}
    )
    assert_problem(locked, 429, "login_locked")


async def test_lock_ends_when_failures_leave_the_window(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    for _ in range(12):
        await client.post(
            "/api/v1/auth/login", json={"email": account.email, "password": "bad1bad1"}
        )
        await age_login_failures(runtime, timedelta(seconds=200))
    await age_login_failures(runtime, timedelta(minutes=16))
    response = await client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": PASSWORD}
    )
    assert response.status_code == 200


async def test_parallel_guesses_cannot_pass_the_lockout(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    attempts = [
        client.post("/api/v1/auth/login", json={"email": account.email, "password": f"bad-{i}xx"})
        for i in range(12)
    ]
    statuses = sorted(response.status_code for response in await asyncio.gather(*attempts))
    assert statuses.count(401) == 5
    assert statuses.count(429) == 7


async def test_successful_login_clears_failures(client: httpx.AsyncClient, signup: Any) -> None:
    account = await signup()
    for _ in range(4):
        await client.post(
            "/api/v1/auth/login", json={"email": account.email, "password": "bad1bad1"}
        )
    ok = await client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": PASSWORD}
    )
    assert ok.status_code == 200
    for _ in range(4):
        await client.post(
            "/api/v1/auth/login", json={"email": account.email, "password": "bad1bad1"}
        )
    still_ok = await client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": PASSWORD}
    )
    assert still_ok.status_code == 200


async def test_refresh_rotates_the_pair(client: httpx.AsyncClient, signup: Any) -> None:
    account = await signup()
    response = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": account.refresh_token}
    )
    assert response.status_code == 200
    pair = response.json()
    assert pair["refresh_token"] != account.refresh_token
    assert pair["access_token"] != account.access_token
    me = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert me.status_code == 200
    again = await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert again.status_code == 200


async def test_reused_refresh_token_revokes_the_whole_login(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    first = (
        await client.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    ).json()
    async with runtime.db.write() as session, session.begin():
        # Step past the grace window for concurrent refreshes.
        from levqor.accounts.models import RefreshToken

        for token in (await session.scalars(select(RefreshToken))).all():
            if token.used_at is not None:
                token.used_at = utcnow() - timedelta(minutes=1)

    reuse = await client.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    assert_problem(reuse, 401, "token_reused")

    newest = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert_problem(newest, 401, "invalid_token")
    for access in (account.access_token, first["access_token"]):
        me = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {access}"})
        assert_problem(me, 401, "invalid_token")

    async with runtime.db.read() as session:
        family = await session.scalar(select(TokenFamily))
        events = (await session.scalars(select(AuditEntry.action))).all()
    assert family is not None
    assert family.revoked_reason == "reuse"
    assert "refresh_token_reuse" in events


async def test_reuse_is_detected_across_processes(
    client: httpx.AsyncClient, signup: Any, settings: Settings
) -> None:
    """A second API process (its own in-memory state) sees the revocation in the database."""
    account = await signup()
    first = (
        await client.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    ).json()
    await client.post(
        "/api/v1/auth/logout",
        json={"refresh_token": first["refresh_token"]},
        headers={"Authorization": f"Bearer {first['access_token']}"},
    )
    async with serve_app(settings) as (other_process, _runtime):
        me = await other_process.get(
            "/api/v1/me", headers={"Authorization": f"Bearer {first['access_token']}"}
        )
    assert_problem(me, 401, "invalid_token")


async def test_concurrent_refresh_within_grace_is_not_theft(
    client: httpx.AsyncClient, signup: Any
) -> None:
    account = await signup()
    results = await asyncio.gather(
        client.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token}),
        client.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token}),
    )
    assert [r.status_code for r in results] == [200, 200]
    for result in results:
        follow = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": result.json()["refresh_token"]}
        )
        assert follow.status_code == 200


async def test_unknown_refresh_token_is_401(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/auth/refresh", json={"refresh_token": "lvr_nope"})
    assert_problem(response, 401, "invalid_token")


async def test_logout_stops_refresh_and_access(client: httpx.AsyncClient, signup: Any) -> None:
    account = await signup()
    response = await client.post(
        "/api/v1/auth/logout",
        json={"refresh_token": account.refresh_token},
        headers=account.headers,
    )
    assert response.status_code == 204
    me = await client.get("/api/v1/me", headers=account.headers)
    assert_problem(me, 401, "invalid_token")
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": account.refresh_token}
    )
    assert_problem(refreshed, 401, "invalid_token")


async def test_logout_leaves_other_logins_working(client: httpx.AsyncClient, signup: Any) -> None:
    account = await signup()
    other = (
        await client.post("/api/v1/auth/login", json={"email": account.email, "password": PASSWORD})
    ).json()
    await client.post(
        "/api/v1/auth/logout",
        json={"refresh_token": account.refresh_token},
        headers=account.headers,
    )
    me = await client.get(
        "/api/v1/me", headers={"Authorization": f"Bearer {other['access_token']}"}
    )
    assert me.status_code == 200


def _token(settings: Settings, **claims: Any) -> str:
    assert settings.jwt_secret is not None
    now = int(time.time())
    payload = {
        "iss": "levqor",
        "sub": "usr_x",
        "jti": "j",
        "sid": "fam_x",
        "typ": "access",
        "iat": now,
        "exp": now + 600,
        **claims,
    }
    return jwt.encode(payload, settings.jwt_secret.get_secret_value(), algorithm="HS256")


async def test_expired_access_token_is_401(
    client: httpx.AsyncClient, signup: Any, settings: Settings
) -> None:
    account = await signup()
    tokens = AccessTokens(settings)
    me_id = (await client.get("/api/v1/me", headers=account.headers)).json()["id"]
    stale, _ = tokens.issue(user_id=me_id, session_id="fam_x", now=utcnow() - timedelta(hours=1))
    response = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {stale}"})
    body = assert_problem(response, 401, "invalid_token")
    assert "expired" in body["detail"]


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_alg_none_is_rejected(client: httpx.AsyncClient, signup: Any) -> None:
    account = await signup()
    claims = jwt.decode(account.access_token, options={"verify_signature": False})
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    response = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {unsigned}"})
    assert_problem(response, 401, "invalid_token")


async def test_rs256_token_is_rejected(client: httpx.AsyncClient, signup: Any) -> None:
    account = await signup()
    claims = jwt.decode(account.access_token, options={"verify_signature": False})
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims, private, algorithm="RS256")
    response = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {forged}"})
    assert_problem(response, 401, "invalid_token")


async def test_hs256_signed_with_a_public_key_is_rejected(
    client: httpx.AsyncClient, signup: Any
) -> None:
    """The classic RS/HS confusion: HMAC keyed with a public key an attacker can read."""
    import hashlib
    import hmac

    account = await signup()
    claims = jwt.decode(account.access_token, options={"verify_signature": False})
    public_pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64(claims)}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    forged = signing_input + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    response = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {forged}"})
    assert_problem(response, 401, "invalid_token")


async def test_token_with_refresh_typ_is_not_an_access_token(
    client: httpx.AsyncClient, signup: Any, settings: Settings
) -> None:
    account = await signup()
    token = _token(settings, sub=account.id, typ="refresh")
    response = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401, "invalid_token")


async def test_token_missing_claims_is_rejected(
    client: httpx.AsyncClient, signup: Any, settings: Settings
) -> None:
    account = await signup()
    assert settings.jwt_secret is not None
    token = jwt.encode(
        {"sub": account.id, "exp": int(time.time()) + 60}, settings.jwt_secret.get_secret_value()
    )
    response = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401, "invalid_token")


async def test_tampered_token_is_rejected(client: httpx.AsyncClient, signup: Any) -> None:
    account = await signup()
    head, _body, signature = account.access_token.split(".")
    claims = jwt.decode(account.access_token, options={"verify_signature": False})
    claims["sub"] = "usr_someoneelse"
    response = await client.get(
        "/api/v1/me", headers={"Authorization": f"Bearer {head}.{_b64(claims)}.{signature}"}
    )
    assert_problem(response, 401, "invalid_token")


async def test_missing_or_malformed_authorization_is_401(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/v1/me")
    assert_problem(missing, 401, "unauthorized")
    assert missing.headers["www-authenticate"] == "Bearer"
    basic = await client.get("/api/v1/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert_problem(basic, 401, "invalid_token")


async def test_password_is_rehashed_when_parameters_change(
    make_settings: Any, fresh_database: None
) -> None:
    old = make_settings()
    async with serve_app(old) as (c, _old_runtime):
        await c.post("/api/v1/auth/signup", json={"email": "r@example.com", "password": PASSWORD})

    stronger = make_settings(argon2_time_cost=3)
    async with serve_app(stronger) as (c, runtime):
        response = await c.post(
            "/api/v1/auth/login", json={"email": "r@example.com", "password": PASSWORD}
        )
        async with runtime.db.read() as session:
            stored = await session.scalar(select(User.password_hash))
    assert response.status_code == 200
    assert stored is not None
    assert stored.startswith("$argon2id$")
    assert ",t=3," in stored


async def test_concurrent_writes_all_succeed(client: httpx.AsyncClient) -> None:
    """Eighteen signups at once (under the auth limit): on SQLite they queue, none fails."""
    responses = await asyncio.gather(
        *[
            client.post(
                "/api/v1/auth/signup", json={"email": f"many{i}@example.com", "password": PASSWORD}
            )
            for i in range(18)
        ]
    )
    assert [r.status_code for r in responses] == [201] * 18
