"""The e-mail step against a real SMTP server on loopback: delivery, login, HTML,
one-click unsubscribe headers for marketing, and never mailing a suppressed address."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from levqor.bootstrap import build_runtime
from levqor.compliance import service as compliance
from levqor.config import Settings
from levqor.jobs.worker import Worker
from levqor.runtime import Runtime
from tests.factories import job, make_workflow, start
from tests.peers import SmtpPeer

POSTAL_ADDRESS = "Levqor Ltd, 1 Main Street, Springfield"


@pytest.fixture
def settings(make_settings: Any, fresh_database: None) -> Settings:
    built: Settings = make_settings(postal_address=POSTAL_ADDRESS)
    return built


def body_parts(message: Any) -> dict[str, str]:
    return {
        part.get_content_type(): part.get_payload(decode=True).decode()
        for part in message.walk()
        if not part.is_multipart()
    }


async def unsubscribed_and_erased(runtime: Runtime, account: Any, unsubscribed: str) -> None:
    """`unsubscribed` left this sender's marketing mail; erased@example.org's account
    was erased, so nobody may mail it."""
    key = runtime.settings.blind_index_key
    assert key is not None
    async with runtime.db.write() as session, session.begin():
        for sender, address, reason in (
            (account.id, unsubscribed, "unsubscribed"),
            (None, "erased@example.org", "erased"),
        ):
            await compliance.suppress(
                session, key=key.get_secret_value(), user_id=sender, address=address, reason=reason
            )


async def mail_credential(
    client: httpx.AsyncClient, account: Any, smtp: SmtpPeer, **extra: Any
) -> str:
    secret = {
        "host": "127.0.0.1",
        "port": smtp.port,
        "security": "none",
        "username": SmtpPeer.username,
        "password": SmtpPeer.password,
        "from": "shop@example.com",
        **extra,
    }
    response = await client.post(
        "/api/v1/credentials",
        headers=account.headers,
        json={"connector": "email", "name": "Shop mail", "secret": secret},
    )
    assert response.status_code == 201, response.text
    credential_id: str = response.json()["id"]
    return credential_id


async def run_email(
    client: httpx.AsyncClient, account: Any, runtime: Runtime, credential_id: str, **params: Any
) -> dict[str, Any]:
    step = {"id": "mail", "connector": "email", "credential": credential_id, "params": params}
    job_id = (
        await start(client, account, await make_workflow(client, account, step), {"name": "Ada"})
    ).json()["job_id"]
    worker = Worker(runtime, concurrency=2)
    await worker.drain()
    await worker.http.aclose()
    return await job(client, account, job_id)


async def test_a_welcome_mail_with_text_and_html(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, smtp_peer: SmtpPeer
) -> None:
    account = await signup()
    credential_id = await mail_credential(client, account, smtp_peer)
    done = await run_email(
        client,
        account,
        runtime,
        credential_id,
        to="ada@example.org",
        subject="Welcome, {{ input.name }}",
        text="Hello {{ input.name }}",
        html="<p>Hello <b>{{ input.name }}</b></p>",
    )
    assert done["status"] == "succeeded", done
    assert done["result"]["sent"] == 1
    [sent] = smtp_peer.messages
    assert sent["to"] == ["ada@example.org"]
    message = sent["message"]
    assert message["Subject"] == "Welcome, Ada"
    assert message["From"] == "shop@example.com"
    assert "List-Unsubscribe" not in message  # transactional
    parts = body_parts(message)
    assert parts["text/plain"].strip() == "Hello Ada"
    assert "<b>Ada</b>" in parts["text/html"]


async def test_marketing_mail_carries_one_click_unsubscribe_and_skips_the_suppressed(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, smtp_peer: SmtpPeer
) -> None:
    account = await signup()
    credential_id = await mail_credential(client, account, smtp_peer)
    await unsubscribed_and_erased(runtime, account, "Gone@Example.org")
    done = await run_email(
        client,
        account,
        runtime,
        credential_id,
        to=["ada@example.org", "gone@example.org", "erased@example.org"],
        subject="Spring sale",
        text="20% off",
        html="<html><body><p>20% off</p></body></html>",
        marketing=True,
    )
    assert done["status"] == "succeeded", done
    assert done["result"]["sent"] == 1
    assert done["result"]["suppressed"] == ["gone@example.org", "erased@example.org"]
    [sent] = smtp_peer.messages  # only the one address still subscribed
    assert sent["to"] == ["ada@example.org"]
    message = sent["message"]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = message["List-Unsubscribe"].strip("<>")
    assert link.startswith(f"{runtime.settings.public_url}/unsubscribe?token=")
    parts = body_parts(message)
    assert link in parts["text/plain"]  # the CAN-SPAM footer: where to write, how to stop
    assert POSTAL_ADDRESS in parts["text/plain"]
    assert f'<a href="{link}">Unsubscribe</a>' in parts["text/html"]
    assert POSTAL_ADDRESS in parts["text/html"]
    assert parts["text/html"].rstrip().endswith("</body></html>")


async def test_a_step_names_its_own_postal_address(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, smtp_peer: SmtpPeer
) -> None:
    account = await signup()
    credential_id = await mail_credential(client, account, smtp_peer)
    done = await run_email(
        client,
        account,
        runtime,
        credential_id,
        to="ada@example.org",
        subject="News",
        text="Hello",
        marketing=True,
        postal_address="Shop & Co, 9 Side Road, Leeds",
    )
    assert done["status"] == "succeeded", done
    text = body_parts(smtp_peer.messages[0]["message"])["text/plain"]
    assert "Shop & Co, 9 Side Road, Leeds" in text
    assert POSTAL_ADDRESS not in text


async def test_marketing_mail_without_a_postal_address_is_refused(
    client: httpx.AsyncClient,
    signup: Any,
    make_settings: Any,
    smtp_peer: SmtpPeer,
) -> None:
    account = await signup()
    credential_id = await mail_credential(client, account, smtp_peer)
    bare = build_runtime(make_settings())  # the same database, no LEVQOR_POSTAL_ADDRESS
    try:
        done = await run_email(
            client,
            account,
            bare,
            credential_id,
            to="a@example.org",
            subject="s",
            text="t",
            marketing=True,
        )
    finally:
        await bare.close()
    assert done["status"] == "failed"
    assert done["attempts"] == 1  # retrying cannot fix it
    assert "postal address (CAN-SPAM)" in done["error"]
    assert smtp_peer.messages == []


async def test_a_wrong_password_fails_at_once(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, smtp_peer: SmtpPeer
) -> None:
    account = await signup()
    credential_id = await mail_credential(client, account, smtp_peer, password="wrong")
    done = await run_email(
        client, account, runtime, credential_id, to="a@example.org", subject="s", text="t"
    )
    assert done["status"] == "failed"
    assert done["attempts"] == 1
    assert "refused the login" in done["error"]
    assert "wrong" not in done["error"]
    assert smtp_peer.messages == []


async def test_a_temporary_refusal_is_retried(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, smtp_peer: SmtpPeer
) -> None:
    account = await signup()
    credential_id = await mail_credential(client, account, smtp_peer)
    smtp_peer.refuse_with = "451 Try again later"
    done = await run_email(
        client,
        account,
        runtime,
        credential_id,
        to="a@example.org",
        subject="s",
        text="t",
    )
    assert done["status"] == "succeeded"
    assert done["attempts"] == 2  # the 451 was retried, then the server took it
    assert len(smtp_peer.messages) == 1


def test_unsubscribe_tokens_are_bound_to_sender_and_address() -> None:
    key = "k" * 40
    token = compliance.unsubscribe_token(key, user_id="usr_1", address="A@Example.org")
    assert token == compliance.unsubscribe_token(key, user_id="usr_1", address="a@example.org ")
    assert token != compliance.unsubscribe_token(key, user_id="usr_2", address="a@example.org")
    assert token != compliance.unsubscribe_token(
        "other" * 8, user_id="usr_1", address="a@example.org"
    )
    assert "example.org" not in token  # the address itself is not in the link


async def test_starttls_delivers_and_an_untrusted_certificate_is_refused(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    tls_server = SmtpPeer(starttls=True)
    tls_server.start()
    try:
        account = await signup()
        trusting = await mail_credential(
            client, account, tls_server, security="starttls", verify_tls=False
        )
        done = await run_email(
            client, account, runtime, trusting, to="a@example.org", subject="s", text="t"
        )
        assert done["status"] == "succeeded", done
        assert len(tls_server.messages) == 1
        checking = await mail_credential(client, account, tls_server, security="starttls")
        refused = await run_email(
            client, account, runtime, checking, to="a@example.org", subject="s", text="t"
        )
    finally:
        tls_server.stop()
    assert refused["status"] == "failed"
    assert refused["attempts"] == 1  # not retried: a certificate does not become trusted
    assert "certificate" in refused["error"]


async def test_transactional_mail_reaches_the_unsubscribed_but_never_the_erased(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, smtp_peer: SmtpPeer
) -> None:
    account = await signup()
    credential_id = await mail_credential(client, account, smtp_peer)
    await unsubscribed_and_erased(runtime, account, "newsletter-only@example.org")
    done = await run_email(
        client,
        account,
        runtime,
        credential_id,
        to=["newsletter-only@example.org", "erased@example.org"],
        subject="Your receipt",
        text="Thanks for your order",
    )
    assert done["status"] == "succeeded", done
    assert done["result"]["suppressed"] == ["erased@example.org"]
    [sent] = smtp_peer.messages  # an unsubscribe stops newsletters, not receipts
    assert sent["to"] == ["newsletter-only@example.org"]
    assert "List-Unsubscribe" not in sent["message"]
