"""The SSRF guard. Address checks use a fake resolver and make no connection; end to
end, only loopback addresses outside the allow-list (127.0.0.2, ::1) are tried."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from levqor.connectors.safety import AllowList, GuardedTransport, UnsafeUrl, check_url
from levqor.jobs.worker import Worker
from levqor.runtime import Runtime

NOTHING_ALLOWED = AllowList.parse([])
PUBLIC = "93.184.216.34"  # only ever an answer of the fake resolver, never contacted


def resolver(answers: dict[str, list[str]]) -> Any:
    asked: list[str] = []

    async def resolve(host: str, _port: int) -> list[str]:
        asked.append(host)
        return answers[host]

    resolve.asked = asked  # type: ignore[attr-defined]
    return resolve


@pytest.mark.parametrize(
    ("url", "answers"),
    [
        ("http://169.254.169.254/latest/meta-data/", {}),
        ("http://10.0.0.1/admin", {}),
        ("http://[::1]:8080/", {}),
        ("http://[::ffff:10.0.0.1]/", {}),
        ("http://0.0.0.0/", {}),
        ("http://metadata.internal/", {"metadata.internal": ["169.254.169.254"]}),
        ("http://looks-public.example/", {"looks-public.example": ["127.0.0.1"]}),
        ("http://split.example/", {"split.example": [PUBLIC, "192.168.1.10"]}),
        ("http://v6.example/", {"v6.example": ["fd00::1"]}),
    ],
)
async def test_private_and_internal_addresses_are_refused(
    url: str, answers: dict[str, list[str]]
) -> None:
    with pytest.raises(UnsafeUrl, match="private or internal"):
        await check_url(url, NOTHING_ALLOWED, resolver(answers))


async def test_public_addresses_pass_and_name_the_address_to_use() -> None:
    resolve = resolver({"api.example": [PUBLIC]})
    assert await check_url("https://api.example/v1", NOTHING_ALLOWED, resolve) == PUBLIC
    assert resolve.asked == ["api.example"]


@pytest.mark.parametrize("url", ["ftp://files.example/", "file:///etc/passwd", "http:///x"])
async def test_other_schemes_are_refused(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        await check_url(url, NOTHING_ALLOWED, resolver({}))


async def test_the_allow_list_takes_networks_and_host_names() -> None:
    allow = AllowList.parse(["127.0.0.1/32", "intranet.example"])
    assert await check_url("http://127.0.0.1:9/", allow, resolver({})) == "127.0.0.1"
    intranet = resolver({"intranet.example": ["10.1.2.3"]})
    assert await check_url("http://intranet.example/", allow, intranet) == "10.1.2.3"
    with pytest.raises(UnsafeUrl):
        await check_url("http://127.0.0.2:9/", allow, resolver({}))


async def test_the_transport_connects_to_the_vetted_address() -> None:
    """DNS rebinding: the name is resolved once, and that address is the one used."""
    seen: list[httpx.Request] = []

    class Recorder(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(200)

    transport = GuardedTransport(NOTHING_ALLOWED, resolver({"api.example": [PUBLIC]}))
    transport._inner = Recorder()  # type: ignore[assignment]
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get("https://api.example/v1")
    [request] = seen
    assert request.url.host == PUBLIC
    assert request.headers["host"] == "api.example"
    assert request.extensions["sni_hostname"] == "api.example"


async def run_step_against(
    client: httpx.AsyncClient, account: Any, runtime: Runtime, url: str
) -> dict[str, Any]:
    created = await client.post(
        "/api/v1/workflows",
        headers=account.headers,
        json={
            "definition": {
                "name": "ssrf",
                "steps": [{"id": "call", "connector": "http_request", "params": {"url": url}}],
            }
        },
    )
    job_id = (
        await client.post(
            f"/api/v1/workflows/{created.json()['id']}/runs", json={}, headers=account.headers
        )
    ).json()["job_id"]
    worker = Worker(runtime, concurrency=1)
    await worker.drain()
    await worker.http.aclose()
    job: dict[str, Any] = (
        await client.get(f"/api/v1/jobs/{job_id}", headers=account.headers)
    ).json()
    return job


@pytest.mark.parametrize("host", ["127.0.0.2", "[::1]"])
async def test_a_step_cannot_reach_loopback_outside_the_allow_list(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, http_peer: Any, host: str
) -> None:
    port = http_peer.url.rsplit(":", 1)[1]
    job = await run_step_against(client, await signup(), runtime, f"http://{host}:{port}/x")
    assert job["status"] == "failed"
    assert job["attempts"] == 1  # refused for good, not retried
    assert "private or internal" in job["error"]
    assert http_peer.requests == []


async def test_redirects_are_not_followed(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, http_peer: Any
) -> None:
    http_peer.reply(302, headers={"location": "http://169.254.169.254/latest/meta-data/"})
    job = await run_step_against(client, await signup(), runtime, f"{http_peer.url}/go")
    assert job["status"] == "succeeded"
    assert job["result"]["status"] == 302
    assert http_peer.paths() == ["/go"]


async def test_a_cookie_one_tenants_call_received_is_never_sent_with_anothers(
    http_peer: Any,
) -> None:
    """Every job of a worker shares one HTTP client: a cookie jar in it would hand one
    user's session at a service to the next user calling that service."""
    from levqor.connectors.safety import guarded_client

    http_peer.reply(200, {"ok": True}, headers={"Set-Cookie": "session=tenant-a; Path=/"})
    async with guarded_client(["127.0.0.1/32"]) as client:
        first = await client.get(f"{http_peer.url}/login")
        await client.get(f"{http_peer.url}/account")
    assert first.headers["set-cookie"].startswith("session=tenant-a")  # the step sees it
    assert "cookie" not in http_peer.requests[1]["headers"]
    assert not client.cookies
