"""The `llm` step against a local OpenAI-compatible server: answers, JSON mode, cost,
and the error classes (429 with Retry-After, 400, 5xx)."""

from __future__ import annotations

from typing import Any

import pytest

from levqor.connectors import llm
from levqor.connectors.errors import ConnectorError, RateLimitedError, RetryableError
from levqor.connectors.llm import LlmServer
from tests.connectors.helpers import step_context
from tests.factories import completion


async def chat(peer: Any, params: dict[str, Any], credential: dict[str, Any] | None = None) -> Any:
    server = LlmServer(f"{peer.url}/v1", "sk-test", "gpt-4o-mini", {"gpt-4o-mini": (0.15, 0.6)})
    async with step_context() as context:
        context = type(context)(**{**context.__dict__, "llm": server})
        return await llm.run("chat", params, credential, context)


async def test_a_chat_answer_with_usage_and_cost(http_peer: Any) -> None:
    http_peer.reply(200, completion("A short summary."))
    output = await chat(http_peer, {"prompt": "Summarise: ...", "system": "Be brief."})
    assert output == {
        "content": "A short summary.",
        "model": "gpt-4o-mini",
        "usage": {"prompt_tokens": 1000, "completion_tokens": 200},
        "cost_micro_usd": 270,  # 1000 x 0.15 + 200 x 0.60 micro-dollars
    }
    [request] = http_peer.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["authorization"] == "Bearer sk-test"
    assert request["json"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Summarise: ..."},
    ]


async def test_json_mode_parses_the_answer(http_peer: Any) -> None:
    http_peer.reply(200, completion('{"label": "refund"}'))
    output = await chat(http_peer, {"prompt": "Classify", "json": True})
    assert output["json"] == {"label": "refund"}
    assert http_peer.requests[0]["json"]["response_format"] == {"type": "json_object"}


async def test_a_credential_points_at_another_server(http_peer: Any) -> None:
    http_peer.reply(200, completion("hi", model="llama3"))
    output = await chat(
        http_peer,
        {"prompt": "hi"},
        {"api_key": "ollama", "base_url": f"{http_peer.url}/v1", "model": "llama3"},
    )
    assert output["model"] == "llama3"
    assert output["cost_micro_usd"] == 0  # not in the price table
    assert http_peer.requests[0]["headers"]["authorization"] == "Bearer ollama"


async def test_429_is_retried_after_the_server_says(http_peer: Any) -> None:
    http_peer.reply(
        429,
        {"error": {"message": "Rate limit reached", "type": "requests"}},
        headers={"retry-after": "20"},
    )
    with pytest.raises(RateLimitedError) as caught:
        await chat(http_peer, {"prompt": "hi"})
    assert caught.value.retry_after_s == 20


async def test_a_bad_request_fails_and_a_server_error_retries(http_peer: Any) -> None:
    http_peer.reply(400, {"error": {"message": "model not found"}})
    with pytest.raises(ConnectorError, match="model not found") as caught:
        await chat(http_peer, {"prompt": "hi"})
    assert not caught.value.retryable
    http_peer.reply(503, {"error": {"message": "overloaded"}})
    with pytest.raises(RetryableError):
        await chat(http_peer, {"prompt": "hi"})


async def test_an_llm_step_in_a_run_records_its_cost_against_the_owner(
    make_settings: Any, fresh_database: None, http_peer: Any
) -> None:
    from sqlalchemy import select

    from levqor.billing.models import LlmUsage
    from levqor.jobs.worker import Worker
    from tests.conftest import serve_app

    http_peer.reply(200, completion("Paid twice this week."))
    settings = make_settings(llm_base_url=f"{http_peer.url}/v1", llm_model="gpt-4o-mini")
    async with serve_app(settings) as (client, runtime):
        signed = (
            await client.post(
                "/api/v1/auth/signup", json={"email": "ai@example.com", "password": "p" * 12}
            )
        ).json()
        headers = {"Authorization": f"Bearer {signed['access_token']}"}
        step = {"id": "sum", "connector": "llm", "params": {"prompt": "Summarise {{ input.n }}"}}
        created = await client.post(
            "/api/v1/workflows",
            headers=headers,
            json={"definition": {"name": "ai", "steps": [step]}},
        )
        run = await client.post(
            f"/api/v1/workflows/{created.json()['id']}/runs",
            headers=headers,
            json={"input": {"n": 2}},
        )
        worker = Worker(runtime, concurrency=1)
        await worker.drain()
        await worker.http.aclose()
        job = (await client.get(f"/api/v1/jobs/{run.json()['job_id']}", headers=headers)).json()
        async with runtime.db.read() as session:
            rows = (await session.execute(select(LlmUsage.purpose, LlmUsage.cost_micro_usd))).all()
    assert job["status"] == "succeeded"
    assert job["result"]["content"] == "Paid twice this week."
    assert http_peer.requests[0]["json"]["messages"] == [{"role": "user", "content": "Summarise 2"}]
    assert [tuple(row) for row in rows] == [("step", 270)]
