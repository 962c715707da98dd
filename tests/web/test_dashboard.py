"""The dashboard: a workflow from words, reviewed and saved; a run started and followed;
nobody sees another user's objects."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from levqor.jobs.worker import Worker
from levqor.runtime import Runtime
from levqor.web import dashboard
from levqor.workflows import service as workflows
from tests.factories import TRANSFORM, signed_in
from tests.factories import save_page_workflow as save

WEBHOOK_URL = r'id="webhook-url" readonly value="http://[^/]+(/hooks/[^"]+)"'


async def drain(runtime: Runtime) -> None:
    worker = Worker(runtime, concurrency=1)
    await worker.drain()
    await worker.http.aclose()


async def test_words_become_a_reviewed_draft_then_a_saved_workflow(
    client: httpx.AsyncClient,
) -> None:
    token = await signed_in(client, "words@example.com")
    review = await client.post(
        "/app/workflows/draft",
        data={"prompt": "When a webhook arrives, post it to Slack #sales", "csrf_token": token},
    )
    assert review.status_code == 200
    assert "<strong>Slack</strong>" in review.text
    definition = re.search(r'<textarea id="definition"[^>]*>(.*?)</textarea>', review.text, re.S)
    assert definition
    saved = await save(client, token, definition.group(1).replace("&#34;", '"'))
    assert saved.status_code == 303
    page = await client.get(saved.headers["location"])
    assert page.status_code == 200
    assert "#sales" in page.text
    assert "/hooks/" in page.text  # the webhook URL to call
    assert "Slack" in (await client.get("/app")).text


async def test_a_missing_detail_is_asked_at_its_step_before_saving(
    client: httpx.AsyncClient,
) -> None:
    token = await signed_in(client, "details@example.com")
    prompt = "When someone pays on Stripe, send a Telegram message and email them a receipt"
    review = await client.post("/app/workflows/draft", data={"prompt": prompt, "csrf_token": token})
    assert review.status_code == 200
    assert "Which Telegram chat should get the message?" in review.text
    assert 'name="answer.telegram_chat_id"' in review.text
    assert 'id="definition"' not in review.text  # nothing to save until it is answered
    fields = {"prompt": prompt, "csrf_token": token}
    wrong = await client.post(
        "/app/workflows/draft", data={**fields, "answer.telegram_chat_id": "x" * 2001}
    )
    assert wrong.status_code == 422
    answered = await client.post(
        "/app/workflows/draft", data={**fields, "answer.telegram_chat_id": "-1001234567"}
    )
    assert answered.status_code == 200
    definition = re.search(r'<textarea id="definition"[^>]*>(.*?)</textarea>', answered.text, re.S)
    assert definition
    saved = json.loads(definition.group(1).replace("&#34;", '"'))
    assert saved["steps"][0]["params"]["chat_id"] == -1001234567


async def test_a_wrong_answer_is_shown_at_its_field_and_kept(client: httpx.AsyncClient) -> None:
    token = await signed_in(client, "wrong@example.com")
    review = await client.post(
        "/app/workflows/draft",
        data={
            "prompt": "Every day at 8am email the daily numbers",
            "answer.email_to": "not-an-address",
            "csrf_token": token,
        },
    )
    assert review.status_code == 422
    field = re.search(r'<input id="answer-email_to"[^>]*>', review.text)
    assert field
    assert 'value="not-an-address"' in field.group(0)
    assert 'aria-invalid="true"' in field.group(0)
    assert "valid email address" in review.text


async def test_a_run_started_from_the_page_shows_each_step_and_its_output(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    token = await signed_in(client, "runner@example.com")
    workflow = (await save(client, token, TRANSFORM)).headers["location"]
    started = await client.post(
        f"{workflow}/runs", data={"input": '{"name": "Ada"}', "csrf_token": token}
    )
    assert started.status_code == 303
    run = started.headers["location"]
    waiting = await client.get(f"{run}/status")
    assert 'data-status="queued"' in waiting.text
    assert 'hx-trigger="every 1s"' in waiting.text  # the page keeps asking while it runs
    await drain(runtime)
    done = await client.get(f"{run}/status")
    assert 'data-status="succeeded"' in done.text
    assert "hx-trigger" not in done.text  # final: no more polling
    assert "Hi Ada" in done.text
    assert "<td>greet</td>" in done.text


async def test_a_run_page_shows_the_input_each_step_was_given(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    token = await signed_in(client, "inputs@example.com")
    definition = {
        "name": "inputs",
        "steps": [
            {"id": "add", "connector": "transform", "params": {"n": "{{ input.n + 1 }}"}},
            {
                "id": "gate",
                "connector": "filter",
                "params": {"condition": "{{ steps.add.output.n > 1 }}"},
            },
            {
                "id": "loop",
                "connector": "transform",
                "params": {"s": "{% for i in range(2) %}{{ i }}{% endfor %}"},
            },
        ],
    }
    workflow = (await save(client, token, definition)).headers["location"]
    started = await client.post(
        f"{workflow}/runs", data={"input": '{"n": 41}', "csrf_token": token}
    )
    await drain(runtime)
    page = (await client.get(started.headers["location"])).text
    cells = re.findall(r'<td class="step-input">(.*?)</td>', page, re.S)
    assert len(cells) == 3
    assert '"n": 42' in cells[0]  # rendered over the run's input
    assert '"condition": true' in cells[1]  # over the first step's output
    assert "{% for i in range(2) %}" in cells[2]  # a worker-only template, as written
    assert "render only in the worker" in cells[2]


async def test_an_invalid_definition_is_shown_with_its_errors_and_not_saved(
    client: httpx.AsyncClient,
) -> None:
    token = await signed_in(client, "typo@example.com")
    broken = {"name": "x", "steps": [{"id": "a", "connector": "no_such_thing"}]}
    answer = await save(client, token, broken)
    assert answer.status_code in (400, 422)
    assert 'id="definition-problems"' in answer.text
    assert "no_such_thing" in answer.text
    not_json = await save(client, token, "{not json")
    assert not_json.status_code == 422
    assert "No workflow yet" in (await client.get("/app")).text


async def test_another_users_workflow_and_run_are_not_found(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    token = await signed_in(client, "owner@example.com")
    workflow = (await save(client, token, TRANSFORM)).headers["location"]
    run = (await client.post(f"{workflow}/runs", data={"csrf_token": token})).headers["location"]
    client.cookies.clear()
    other = await signed_in(client, "other@example.com")
    assert (await client.get(workflow)).status_code == 404
    assert (await client.get(run)).status_code == 404
    assert (await client.get(f"{run}/status")).status_code == 404
    stolen = await client.post(f"{workflow}/runs", data={"csrf_token": other})
    assert stolen.status_code == 404


async def test_a_visitor_is_sent_to_log_in_and_back(client: httpx.AsyncClient) -> None:
    answer = await client.get("/app/workflows/new")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=/app/workflows/new"


async def test_the_runs_list_pages_and_follows_live_runs(
    client: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashboard, "RUNS_PAGE", 10)
    token = await signed_in(client, "many@example.com")
    workflow = (await save(client, token, TRANSFORM)).headers["location"]
    for _ in range(12):
        await client.post(f"{workflow}/runs", data={"input": '{"name": "A"}', "csrf_token": token})
    first = await client.get("/app/runs")
    assert first.status_code == 200
    assert first.text.count('href="/app/runs/job_') == 10
    assert 'hx-trigger="every 2s"' in first.text  # queued runs: the table keeps asking
    older = re.search(r'href="(/app/runs\?cursor=[^"]+)"', first.text)
    assert older
    second = await client.get(older.group(1).replace("&amp;", "&"))
    assert second.text.count('href="/app/runs/job_') == 2
    await drain(runtime)
    settled = await client.get("/app/runs/table")
    assert "hx-trigger" not in settled.text  # all final: no more polling
    assert settled.text.count("<td>succeeded</td>") == 10


async def test_out_of_credits_the_page_says_so(client: httpx.AsyncClient, runtime: Runtime) -> None:
    token = await signed_in(client, "spent@example.com")
    workflow = (await save(client, token, TRANSFORM)).headers["location"]
    for _ in range(runtime.settings.free_credits):
        assert (
            await client.post(f"{workflow}/runs", data={"csrf_token": token})
        ).status_code == 303
    refused = await client.post(f"{workflow}/runs", data={"csrf_token": token})
    assert refused.status_code == 402
    assert "credits" in refused.text
    assert 'href="/pricing"' in refused.text


async def test_edit_as_json_makes_a_version_and_rollback_brings_one_back(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    token = await signed_in(client, "editor@example.com")
    workflow = (await save(client, token, TRANSFORM)).headers["location"]
    step = {"id": "greet", "connector": "transform", "params": {"text": "Bye"}}
    edited = {"name": "greet", "steps": [step]}
    saved = await client.post(
        f"{workflow}/versions", data={"definition": json.dumps(edited), "csrf_token": token}
    )
    assert saved.status_code == 303
    page = (await client.get(workflow)).text
    assert "Version 2" in page
    assert "Bye" in page
    broken = await client.post(
        f"{workflow}/versions",
        data={"definition": '{"name": "x", "steps": "nope"}', "csrf_token": token},
    )
    assert broken.status_code == 422
    assert 'id="definition-problems"' in broken.text
    assert "steps" in broken.text
    assert '"steps": "nope"' in broken.text.replace("&#34;", '"')  # the edit is kept
    back = await client.post(f"{workflow}/rollback", data={"version": "1", "csrf_token": token})
    assert back.status_code == 303
    assert "Version 1" in (await client.get(workflow)).text


async def test_a_runs_page_cancels_and_retries(client: httpx.AsyncClient, runtime: Runtime) -> None:
    token = await signed_in(client, "ops@example.com")
    workflow = (await save(client, token, TRANSFORM)).headers["location"]
    waiting = (await client.post(f"{workflow}/runs", data={"csrf_token": token})).headers[
        "location"
    ]
    cancelled = await client.post(f"{waiting}/cancel", data={"csrf_token": token})
    assert cancelled.status_code == 303
    assert 'data-status="cancelled"' in (await client.get(waiting)).text
    failing = (await client.post(f"{workflow}/runs", data={"csrf_token": token})).headers[
        "location"
    ]
    await drain(runtime)  # no input.name: the template fails, the run fails
    failed = await client.get(failing)
    assert 'data-status="failed"' in failed.text
    assert "Retry from the failed step" in failed.text
    retried = await client.post(f"{failing}/retry", data={"csrf_token": token})
    assert retried.status_code == 303
    assert 'data-status="queued"' in (await client.get(failing)).text
    again = await client.post(f"{waiting}/retry", data={"csrf_token": token})
    assert again.status_code == 409  # a cancelled run is not retried
    assert 'role="alert"' in again.text


async def test_rotating_the_webhook_url_retires_the_old_one(client: httpx.AsyncClient) -> None:
    token = await signed_in(client, "hooks@example.com")
    hook = {**TRANSFORM, "trigger": {"type": "webhook"}}
    workflow = (await save(client, token, hook)).headers["location"]
    old = re.search(WEBHOOK_URL, (await client.get(workflow)).text)
    assert old
    rotated = await client.post(f"{workflow}/webhook", data={"csrf_token": token})
    assert rotated.status_code == 303
    new = re.search(WEBHOOK_URL, (await client.get(workflow)).text)
    assert new
    assert new.group(1) != old.group(1)
    assert (await client.post(old.group(1), json={"name": "x"})).status_code == 404
    assert (await client.post(new.group(1), json={"name": "x"})).status_code == 202


async def test_a_schedule_is_turned_off_and_on_from_its_page(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    token = await signed_in(client, "switch@example.com")
    scheduled = {**TRANSFORM, "trigger": {"type": "schedule", "cron": "0 9 * * 1-5"}}
    workflow = (await save(client, token, scheduled)).headers["location"]
    page = (await client.get(workflow)).text
    assert "On: it fires every weekday at 09:00" in page
    off = await client.post(f"{workflow}/schedule", data={"enabled": "false", "csrf_token": token})
    assert off.status_code == 303
    page = (await client.get(workflow)).text
    assert "Off: it does not fire until you turn it on." in page
    assert "Turn the schedule on" in page
    async with runtime.db.read() as session:
        assert await workflows.list_scheduled(session) == []
    on = await client.post(f"{workflow}/schedule", data={"enabled": "true", "csrf_token": token})
    assert on.status_code == 303
    async with runtime.db.read() as session:
        assert len(await workflows.list_scheduled(session)) == 1
    manual = (await save(client, token, TRANSFORM)).headers["location"]
    refused = await client.post(
        f"{manual}/schedule", data={"enabled": "false", "csrf_token": token}
    )
    assert refused.status_code == 409
    assert "not a schedule" in refused.text


async def test_saving_warns_of_what_will_fail_when_it_runs(client: httpx.AsyncClient) -> None:
    token = await signed_in(client, "careful@example.com")
    definition = {
        "name": "risky",
        "steps": [
            {"id": "notify", "connector": "slack", "params": {"channel": "#a", "text": "hi"}},
            {
                "id": "internal",
                "connector": "http_request",
                "params": {"method": "GET", "url": "http://10.0.0.5/admin"},
            },
            {
                "id": "public",
                "connector": "http_request",
                "params": {"method": "GET", "url": "https://93.184.216.34/"},
            },
        ],
    }
    saved = await save(client, token, definition)
    assert saved.status_code == 303  # saved all the same: these are warnings
    page = (await client.get(saved.headers["location"])).text
    notify = page.split("<strong>Slack</strong>")[1].split("<strong>Http request</strong>")[0]
    assert "needs a credential" in notify  # next to its step
    assert "10.0.0.5 is a private or internal address" in page
    assert page.count("private or internal address") == 1  # the public address passes
    params = {"channel": "#a", "text": "hi"}
    slack = {"id": "notify", "connector": "slack", "credential": "cred_nope", "params": params}
    stranger = {"name": "stranger", "steps": [slack]}
    other = await save(client, token, stranger)
    assert "cred_nope does not exist" in (await client.get(other.headers["location"])).text


async def test_failed_runs_are_replayed_in_bulk(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    token = await signed_in(client, "dead@example.com")
    workflow = (await save(client, token, TRANSFORM)).headers["location"]
    for _ in range(3):
        await client.post(f"{workflow}/runs", data={"csrf_token": token})  # no input.name
    await drain(runtime)
    page = await client.get("/app/dead-letters")
    chosen = re.findall(r'name="job_ids" value="(job_\w+)"', page.text)
    assert len(chosen) == 3
    replay = await client.post(
        "/app/dead-letters/replay",
        data={"csrf_token": token, "job_ids": [*chosen[:2], "job_notmine"]},
    )
    assert replay.headers["location"] == "/app/dead-letters?replayed=2"
    left = re.findall(
        r'name="job_ids" value="(job_\w+)"', (await client.get("/app/dead-letters")).text
    )
    assert left == [chosen[2]]


async def test_a_run_input_the_api_would_refuse_is_refused_on_the_page(
    client: httpx.AsyncClient,
) -> None:
    token = await signed_in(client, "bounds@example.com")
    workflow = (await save(client, token, TRANSFORM)).headers["location"]
    huge = await client.post(
        f"{workflow}/runs", data={"input": '{"n": ' + "9" * 40 + "}", "csrf_token": token}
    )
    assert huge.status_code == 422
    assert 'role="alert"' in huge.text
    runs = (await client.get("/app/runs")).text
    assert "/app/runs/job_" not in runs  # nothing was queued
