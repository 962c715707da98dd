"""What a retry repeats: outbound calls carry the step's idempotency key, the same on every
try of one attempt group; redirects are followed only when asked, each hop vetted."""

from __future__ import annotations

import tracemalloc
from typing import Any

import httpx
import pytest

from levqor.connectors.errors import ConnectorError
from levqor.jobs.worker import Worker
from levqor.runtime import Runtime
from tests.connectors.helpers import run_action
from tests.factories import FAST_RETRY, job, make_workflow, post_to, start


async def test_a_retried_step_sends_the_same_key_and_a_replay_a_new_one(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, http_peer: Any
) -> None:
    account = await signup()
    http_peer.reply(503, {"busy": True}, times=3)  # every try of the first attempt group
    step = post_to(http_peer, "/charge", params={"idempotency_key": True}, retry=FAST_RETRY)
    workflow_id = await make_workflow(client, account, step)
    job_id = (await start(client, account, workflow_id)).json()["job_id"]
    worker = Worker(runtime, concurrency=2)
    await worker.drain()
    assert (await job(client, account, job_id))["status"] == "failed"
    first_group = {request["headers"]["idempotency-key"] for request in http_peer.requests}
    assert len(http_peer.requests) == 3
    assert len(first_group) == 1

    retried = await client.post(f"/api/v1/jobs/{job_id}/retry", headers=account.headers)
    assert retried.status_code == 202
    await worker.drain()
    await worker.http.aclose()
    assert (await job(client, account, job_id))["status"] == "succeeded"
    replay_key = http_peer.requests[-1]["headers"]["idempotency-key"]
    assert replay_key not in first_group
    assert replay_key.startswith("lvq_")


async def test_without_opting_in_no_key_is_sent(http_peer: Any) -> None:
    await run_action("http_request", {"method": "POST", "url": f"{http_peer.url}/x"}, None)
    assert "idempotency-key" not in http_peer.requests[0]["headers"]


async def test_stripe_posts_carry_the_steps_key(http_peer: Any) -> None:
    http_peer.default = (200, {"id": "plink_1", "url": "https://buy.test/1"}, {})
    credential = {"secret_key": "sk_test_x", "base_url": http_peer.url}
    params = {"price": "price_1"}
    for _ in range(2):
        await run_action(
            "stripe", params, credential, "create_payment_link", job_id="job_a", step_id="link"
        )
    keys = [request["headers"]["idempotency-key"] for request in http_peer.requests]
    assert keys[0] == keys[1]
    await run_action(
        "stripe", params, credential, "create_payment_link", job_id="job_b", step_id="link"
    )
    assert http_peer.requests[-1]["headers"]["idempotency-key"] != keys[0]


async def test_redirects_are_not_followed_unless_asked(http_peer: Any) -> None:
    http_peer.reply(302, {}, headers={"location": "/there"})
    output = await run_action("http_request", {"url": f"{http_peer.url}/here"}, None)
    assert output["status"] == 302
    assert http_peer.paths() == ["/here"]


async def test_a_followed_303_continues_as_a_get_without_the_body(http_peer: Any) -> None:
    http_peer.reply(303, {}, headers={"location": "/result"})
    http_peer.reply(200, {"done": True})
    params = {
        "method": "POST",
        "url": f"{http_peer.url}/submit",
        "json": {"order": 1},
        "follow_redirects": True,
    }
    output = await run_action("http_request", params, None)
    assert output["status"] == 200
    assert output["body"] == {"done": True}
    assert output["url"] == f"{http_peer.url}/result"
    assert [(r["method"], r["path"], r["json"]) for r in http_peer.requests] == [
        ("POST", "/submit", {"order": 1}),
        ("GET", "/result", None),
    ]


async def test_a_307_keeps_method_and_body(http_peer: Any) -> None:
    http_peer.reply(307, {}, headers={"location": "/v2/orders"})
    params = {
        "method": "PUT",
        "url": f"{http_peer.url}/orders",
        "json": {"id": 7},
        "follow_redirects": True,
    }
    await run_action("http_request", params, None)
    assert [(r["method"], r["json"]) for r in http_peer.requests] == [
        ("PUT", {"id": 7}),
        ("PUT", {"id": 7}),
    ]


async def test_a_redirect_loop_stops_after_five_hops(http_peer: Any) -> None:
    http_peer.reply(302, {}, headers={"location": "/loop"}, times=10)
    with pytest.raises(ConnectorError, match="more than 5 redirects"):
        await run_action(
            "http_request", {"url": f"{http_peer.url}/loop", "follow_redirects": True}, None
        )
    assert len(http_peer.requests) == 6


async def test_every_hop_passes_the_ssrf_guard(http_peer: Any) -> None:
    """A public-looking start redirected inward: 127.0.0.2 is not on the allow list
    (127.0.0.1/32 is), so the hop is refused before any connection is made."""
    http_peer.reply(302, {}, headers={"location": f"http://127.0.0.2:{http_peer.port}/admin"})
    with pytest.raises(ConnectorError, match=r"not allowed|refused|private|internal"):
        await run_action(
            "http_request", {"url": f"{http_peer.url}/start", "follow_redirects": True}, None
        )
    assert http_peer.paths() == ["/start"]


async def test_credentials_are_not_carried_to_another_host(http_peer: Any) -> None:
    http_peer.reply(302, {}, headers={"location": f"http://localhost:{http_peer.port}/next"})
    params = {
        "url": f"{http_peer.url}/first",
        "headers": {"Authorization": "Bearer secret", "X-Trace": "1"},
        "follow_redirects": True,
    }
    await run_action("http_request", params, None)  # localhost is 127.0.0.1: allowed
    first, second = (request["headers"] for request in http_peer.requests)
    assert first["authorization"] == "Bearer secret"
    assert "authorization" not in second
    assert second["x-trace"] == "1"


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/declared", id="a body announced larger than the limit"),
        pytest.param("/chunked", id="a chunked body that grows past it"),
        pytest.param("/bomb", id="a small gzip body that unpacks past it"),
    ],
)
async def test_an_answer_too_large_fails_the_step_without_being_read_whole(
    hostile_peer: Any, path: str
) -> None:
    """Every user's steps share a worker's memory: a 50 MiB answer is refused as soon as
    it passes the 5 MiB limit, not after it has been held whole."""
    tracemalloc.start()
    try:
        with pytest.raises(ConnectorError) as caught:
            await run_action("http_request", {"url": f"{hostile_peer.url}{path}"}, None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.message == "response larger than 5242880 bytes"
    assert not caught.value.retryable
    assert peak < 16 * 1024 * 1024  # the limit and one copy of it, not the 50 MiB


@pytest.mark.parametrize("path", ["/small", "/gzipped"])
async def test_an_answer_within_the_limit_still_reads_whole(hostile_peer: Any, path: str) -> None:
    output = await run_action("http_request", {"url": f"{hostile_peer.url}{path}"}, None)
    assert output["status"] == 200
    assert output["body"] == {"ok": True}
