"""POST /api/v1/plan: plain words -> a validated draft, by rules offline or by an LLM."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from levqor.billing.models import LlmUsage
from levqor.runtime import Runtime
from levqor.workflows.planner import NotUnderstood, answer, plan_with_rules
from tests.conftest import assert_problem, serve_app
from tests.factories import completion

# The corpus the rules were first written against; a second of 88 requests in varied
# wording, written before the rules were widened; a third written after, read once blind.
# bench/planner.py reports the accuracy on each.
CORPORA = ("planner_corpus.json", "planner_corpus_fresh.json", "planner_corpus_blind.json")
CASES = [
    pytest.param(case, id=f"{name.removesuffix('.json')}: {case['prompt'][:50]}")
    for name in CORPORA
    for case in json.loads((Path(__file__).parent / name).read_text())
]


@pytest.mark.parametrize("case", CASES)
def test_the_rules_planner_reads_the_corpora(case: dict[str, Any]) -> None:
    drafted = plan_with_rules(case["prompt"])
    trigger = drafted.definition["trigger"]
    assert trigger["type"] == case["trigger"]
    assert trigger.get("cron") == case.get("cron")
    if case["trigger"] == "schedule":
        assert trigger["timezone"] == case.get("timezone", "UTC")
    assert [step["connector"] for step in drafted.definition["steps"]] == case["connectors"]
    assert sorted(needed.name for needed in drafted.inputs) == sorted(case.get("inputs", []))
    assert drafted.not_understood == []


def test_templates_point_at_the_triggers_data() -> None:
    drafted = plan_with_rules(
        "When someone pays on Stripe, summarise it with AI, post it to Slack #sales "
        "and email them a welcome"
    )
    ai, slack, mail = drafted.definition["steps"]
    assert "input.data.object" in ai["params"]["prompt"]
    assert slack["params"] == {"channel": "#sales", "text": "{{ steps.llm.output.content }}"}
    assert mail["params"]["to"] == "{{ input.data.object.customer_details.email }}"
    assert any("Slack credential" in note for note in drafted.notes)


def test_what_it_cannot_read_is_said_not_guessed() -> None:
    drafted = plan_with_rules("Every day at 9 post to Slack #news and water the plants")
    assert [step["connector"] for step in drafted.definition["steps"]] == ["slack"]
    assert drafted.not_understood == ["water the plants"]


def test_a_missing_detail_is_asked_for_and_the_step_stays() -> None:
    drafted = plan_with_rules("When I receive a webhook post to Discord and email someone")
    assert [step["connector"] for step in drafted.definition["steps"]] == ["discord", "email"]
    [needed] = drafted.inputs
    assert (needed.name, needed.step, needed.param) == ("email_to", "email", "to")
    assert needed.reason == "The request names no address."
    mail = drafted.definition["steps"][1]
    assert mail["params"]["to"] == "{{ input.email_to }}"  # a run without it fails, named
    assert drafted.not_understood == []


def test_a_schedule_has_no_one_to_email_back() -> None:
    [needed] = plan_with_rules("Every Friday at 5pm email them a reminder").inputs
    assert needed.reason == "The trigger names no one to e-mail."


async def test_answers_fill_in_the_draft(client: httpx.AsyncClient, signup: Any) -> None:
    account = await signup()
    prompt = "When someone pays on Stripe, send a Telegram message and open a GitHub issue"
    first = await client.post("/api/v1/plan", headers=account.headers, json={"prompt": prompt})
    assert first.status_code == 201, first.text
    asked = {item["name"]: item for item in first.json()["inputs"]}
    assert set(asked) == {"telegram_chat_id", "github_owner", "github_repo"}
    assert asked["telegram_chat_id"]["question"] == "Which Telegram chat should get the message?"
    answered = await client.post(
        "/api/v1/plan",
        headers=account.headers,
        json={
            "prompt": prompt,
            "answers": {"telegram_chat_id": "-1001234567", "github_owner": "acme", "zzz": "x"},
        },
    )
    body = answered.json()
    assert answered.status_code == 201, answered.text
    telegram, github = body["definition"]["steps"]
    assert telegram["params"]["chat_id"] == -1001234567
    assert github["params"]["owner"] == "acme"
    assert [item["name"] for item in body["inputs"]] == ["github_repo"]
    assert "The answer 'zzz' matches no detail this draft asks for." in body["notes"]


async def test_a_wrong_answer_is_422_at_the_field(client: httpx.AsyncClient, signup: Any) -> None:
    account = await signup()
    answer = await client.post(
        "/api/v1/plan",
        headers=account.headers,
        json={"prompt": "Every day at 8am email the numbers", "answers": {"email_to": "nope"}},
    )
    assert_problem(answer, 422, "invalid_definition")
    assert answer.json()["errors"][0]["field"].startswith("definition.steps[0].params.to")


def test_pasted_links_become_ids() -> None:
    drafted = plan_with_rules("When a form is submitted, add a row to Google Sheets")
    link = "https://docs.google.com/spreadsheets/d/1AbC-xyz/edit#gid=0"
    answered = answer(drafted, {"google_sheets_spreadsheet_id": link})
    assert answered.definition["steps"][0]["params"]["spreadsheet_id"] == "1AbC-xyz"
    assert answered.inputs == []


async def test_the_api_answers_a_draft_that_saves_as_is(
    client: httpx.AsyncClient, signup: Any
) -> None:
    account = await signup()
    answer = await client.post(
        "/api/v1/plan",
        headers=account.headers,
        json={"prompt": "When I receive a webhook, post it to Slack #ops"},
    )
    assert answer.status_code == 201
    body = answer.json()
    assert body["planner"] == "rules"
    assert body["usage"] is None
    saved = await client.post(
        "/api/v1/workflows", headers=account.headers, json={"definition": body["definition"]}
    )
    assert saved.status_code == 201, saved.text
    assert saved.json()["webhook_url"]


async def test_nothing_readable_is_422(client: httpx.AsyncClient, signup: Any) -> None:
    account = await signup()
    answer = await client.post(
        "/api/v1/plan", headers=account.headers, json={"prompt": "do a little dance"}
    )
    assert_problem(answer, 422, "plan_not_understood")
    assert "do a little dance" in answer.json()["detail"]


VALID = {
    "name": "Payments to Slack",
    "trigger": {"type": "webhook"},
    "steps": [
        {
            "id": "notify",
            "connector": "slack",
            "params": {"channel": "#sales", "text": "Paid {{ input.amount }}"},
        }
    ],
}
INVALID = {**VALID, "steps": [{"id": "notify", "connector": "fax", "params": {}}]}


async def test_the_llm_planner_repairs_an_invalid_answer(
    make_settings: Any, fresh_database: None, http_peer: Any
) -> None:
    http_peer.reply(200, completion(json.dumps(INVALID)))
    http_peer.reply(200, completion(json.dumps(VALID)))
    settings = make_settings(llm_base_url=f"{http_peer.url}/v1", llm_model="gpt-4o-mini")
    async with serve_app(settings) as (client, runtime):
        account = await _signup(client)
        answer = await client.post(
            "/api/v1/plan", headers=account, json={"prompt": "tell Slack when I get paid"}
        )
        usage = await _usage(runtime)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["planner"] == "llm"
    assert body["definition"]["steps"][0]["connector"] == "slack"
    assert body["usage"]["prompt_tokens"] == 2000  # two rounds of 1000
    assert usage == [("plan", 2000, 400, 540)]
    first, repair = (request["json"] for request in http_peer.requests)
    assert first["response_format"] == {"type": "json_object"}
    assert "slack" in first["messages"][0]["content"]  # the catalogue went along
    assert "unknown connector 'fax'" in repair["messages"][-1]["content"]


async def test_a_model_that_never_gets_it_right_falls_back_to_rules(
    make_settings: Any, fresh_database: None, http_peer: Any
) -> None:
    http_peer.reply(200, completion("not json at all"), times=3)
    settings = make_settings(llm_base_url=f"{http_peer.url}/v1")
    async with serve_app(settings) as (client, runtime):
        account = await _signup(client)
        answer = await client.post(
            "/api/v1/plan", headers=account, json={"prompt": "hourly post to Slack #pings"}
        )
        usage = await _usage(runtime)
    body = answer.json()
    assert answer.status_code == 201
    assert body["planner"] == "rules"
    assert "AI planner could not help" in body["notes"][0]
    assert len(http_peer.requests) == 3  # one try and two repairs
    assert usage[0][1] == 3000


async def _signup(client: httpx.AsyncClient) -> dict[str, str]:
    body = (
        await client.post(
            "/api/v1/auth/signup", json={"email": "planner@example.com", "password": "p" * 12}
        )
    ).json()
    return {"Authorization": f"Bearer {body['access_token']}"}


async def _usage(runtime: Runtime) -> list[tuple[str, int, int, int]]:
    async with runtime.db.read() as session:
        rows = await session.execute(
            select(
                LlmUsage.purpose,
                LlmUsage.prompt_tokens,
                LlmUsage.completion_tokens,
                LlmUsage.cost_micro_usd,
            )
        )
    return [tuple(row) for row in rows]  # type: ignore[misc]


def test_ids_in_links_are_read_and_missing_ones_are_flagged() -> None:
    linked = plan_with_rules(
        "every 2 hours append a row to the spreadsheet "
        "https://docs.google.com/spreadsheets/d/1xYz_AbC/edit"
    )
    assert linked.definition["steps"][0]["params"]["spreadsheet_id"] == "1xYz_AbC"
    unlinked = plan_with_rules("When a form is submitted, add a row to my Google Sheet")
    assert unlinked.definition["steps"][0]["params"]["spreadsheet_id"] == (
        "{{ input.google_sheets_spreadsheet_id }}"
    )
    assert [needed.name for needed in unlinked.inputs] == ["google_sheets_spreadsheet_id"]


@pytest.mark.parametrize(
    ("prompt", "trigger", "cron"),
    [
        ("Every day 6pm post to Slack #team", "schedule", "0 18 * * *"),
        ("daily at 17:00 post to Slack #team", "schedule", "0 17 * * *"),
        ("every weekday noon post to Slack #lunch", "schedule", "0 12 * * 1-5"),
        ("every evening post to Slack #ops", "schedule", "0 18 * * *"),
        ("every day 3 reports to Slack #x", "schedule", "0 9 * * *"),  # 3 is no time
        ("When I call the webhook, post it to Slack #a", "webhook", None),
        ("when the webhook is called, post it to Slack #a", "webhook", None),
        ("Whenever my form posts, email me at me@example.com", "webhook", None),
        ("When a payment comes through Stripe, post it to Slack #sales", "webhook", None),
    ],
)
def test_times_and_triggers_as_people_phrase_them(
    prompt: str, trigger: str, cron: str | None
) -> None:
    drafted = plan_with_rules(prompt).definition
    assert drafted["trigger"]["type"] == trigger
    assert drafted["trigger"].get("cron") == cron


def test_fetching_a_url_reads_it_and_sends_nothing() -> None:
    [step] = plan_with_rules("Fetch https://example.com/data.json every hour").definition["steps"]
    assert (step["connector"], step["params"]) == (
        "http_request",
        {"method": "GET", "url": "https://example.com/data.json"},
    )
    [post] = plan_with_rules("Post it to https://example.com/in").definition["steps"]
    assert post["params"]["method"] == "POST"


@pytest.mark.parametrize(
    "prompt",
    ["when post " * 200, "when " * 400, "on each " * 250, "at 9 and " * 222, '"a' * 1000],
    ids=["opener-verb", "openers", "on-each", "times", "quotes"],
)
def test_a_hostile_prompt_costs_milliseconds_not_seconds(prompt: str) -> None:
    """The planner is bounded in the prompt: 2,000 characters of repeated openers took
    5 s of CPU before the event clause was capped (now about 10 ms)."""
    started = time.thread_time()
    with contextlib.suppress(NotUnderstood):
        plan_with_rules(prompt[:2000])
    assert time.thread_time() - started < 0.5
