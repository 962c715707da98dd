"""Factories the tests share: an account's workflow, a run and its state, an admin, a
refund, a credential, an LLM answer. Test modules import these from here, never from
each other."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.util import await_only

from levqor.accounts.models import ROLE_ADMIN, User
from levqor.db.base import utcnow
from levqor.jobs import queue
from levqor.jobs.models import Job
from levqor.runtime import Runtime
from levqor.workflows.models import Workflow, WorkflowVersion
from tests.conftest import PASSWORD

FAST_RETRY = {"max_attempts": 3, "backoff_s": 0.01, "max_backoff_s": 0.05}
LEASE = timedelta(seconds=30)


async def make_workflow(client: httpx.AsyncClient, account: Any, *steps: dict[str, Any]) -> str:
    response = await client.post(
        "/api/v1/workflows",
        json={"definition": {"name": "test", "steps": list(steps)}},
        headers=account.headers,
    )
    assert response.status_code == 201, response.text
    workflow_id: str = response.json()["id"]
    return workflow_id


async def start(
    client: httpx.AsyncClient, account: Any, workflow_id: str, payload: Any = None, **headers: str
) -> httpx.Response:
    return await client.post(
        f"/api/v1/workflows/{workflow_id}/runs",
        json={"input": payload or {}},
        headers={**account.headers, **headers},
    )


async def job(client: httpx.AsyncClient, account: Any, job_id: str) -> dict[str, Any]:
    body: dict[str, Any] = (
        await client.get(f"/api/v1/jobs/{job_id}", headers=account.headers)
    ).json()
    return body


def post_to(peer: Any, path: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": extra.pop("id", "notify"),
        "connector": "http_request",
        "params": {"method": "POST", "url": peer.url + path, **extra.pop("params", {})},
        "retry": extra.pop("retry", FAST_RETRY),
        **extra,
    }


async def make_admin(runtime: Runtime, account: Any) -> None:
    async with runtime.db.session(write=True) as session, session.begin():
        await session.execute(update(User).where(User.id == account.id).values(role=ROLE_ADMIN))


async def refund(
    client: httpx.AsyncClient, admin: Any, payment_id: str, **extra: Any
) -> httpx.Response:
    return await client.post(
        "/api/v1/admin/refunds",
        json={"payment_id": payment_id, "reason": "customer asked"} | extra,
        headers=admin.headers,
    )


SECRET = "xoxb-very-secret-token-1234"


async def add_credential(
    client: httpx.AsyncClient, account: Any, base_url: str | None = None, **secret: str
) -> httpx.Response:
    return await client.post(
        "/api/v1/credentials",
        headers=account.headers,
        json={
            "connector": "slack",
            "name": "Sales workspace",
            "secret": secret or {"bot_token": SECRET},
            **({"base_url": base_url} if base_url else {}),
        },
    )


def completion(content: str, *, model: str = "gpt-4o-mini") -> dict[str, Any]:
    """A chat completion body as OpenAI's API answers it."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200},
    }


async def webhook_workflow(
    client: httpx.AsyncClient, account: Any, trigger: str = "webhook"
) -> dict[str, Any]:
    definition = {
        "name": "on payment",
        "trigger": {"type": trigger},
        "steps": [
            {
                "id": "shape",
                "connector": "transform",
                "params": {"who": "{{ input.customer.email }}", "cents": "{{ input.amount }}"},
            }
        ],
    }
    response = await client.post(
        "/api/v1/workflows", json={"definition": definition}, headers=account.headers
    )
    created: dict[str, Any] = response.json()
    return created


def hook_path(workflow: dict[str, Any]) -> str:
    url: str = workflow["webhook_url"]
    return "/" + url.split("/", 3)[3]


def sqlite_files(data_dir: Path) -> bytes:
    """The database file and its write-ahead log, as bytes on disk."""
    return b"".join(path.read_bytes() for path in data_dir.glob("levqor.db*"))


async def user_with_workflow(
    session: AsyncSession, *, name: str, credits: int = 0
) -> tuple[User, Workflow]:
    """A user (`name`@example.com) and one saved workflow, in `session`'s transaction."""
    user = User(email=f"{name}@example.com", email_index=name, password_hash="x", credits=credits)
    session.add(user)
    await session.flush()
    workflow = Workflow(
        user_id=user.id,
        name="w",
        current_version=1,
        trigger_type="manual",
        webhook_token_hash=f"h-{name}",
        webhook_token_encrypted="e",
    )
    session.add(workflow)
    await session.flush()
    session.add(WorkflowVersion(workflow_id=workflow.id, version=1, definition={}))
    return user, workflow


async def seed(runtime: Runtime, *, users: int, jobs_each: int, tag: str = "q") -> None:
    async with runtime.db.write() as session, session.begin():
        for index in range(users):
            user, workflow = await user_with_workflow(session, name=f"{tag}{index}")
            session.add_all(
                Job(user_id=user.id, workflow_id=workflow.id, workflow_version=1, input={})
                for _ in range(jobs_each)
            )


async def claim_as(
    runtime: Runtime,
    worker: str,
    limit: int,
    per_user: int = 1000,
    *,
    concurrency: int | None = None,
) -> list[str]:
    """Claim as `worker`; with its `concurrency`, one user is also capped by the fleet
    (the workers that beat in the last minute)."""
    now = utcnow()
    async with runtime.db.session(write=True) as session, session.begin():
        claimed = await queue.claim(
            session,
            worker_id=worker,
            limit=limit,
            lease=LEASE,
            now=now,
            max_running_per_user=per_user,
            concurrency=concurrency,
            alive_since=now - timedelta(minutes=1),
        )
    return [job.id for job in claimed]


# The web pages: an account signed in through /signup, a workflow saved through /app.
TRANSFORM = {
    "name": "greet",
    "steps": [{"id": "greet", "connector": "transform", "params": {"text": "Hi {{ input.name }}"}}],
}


async def signed_in(client: httpx.AsyncClient, email: str) -> str:
    """Sign up through the web page; the CSRF token its next forms carry."""
    page = await client.get("/signup")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    data = {"email": email, "password": PASSWORD, "csrf_token": token.group(1)}
    assert (await client.post("/signup", data=data)).status_code == 303
    return token.group(1)


async def save_page_workflow(
    client: httpx.AsyncClient, token: str, definition: Any
) -> httpx.Response:
    text = definition if isinstance(definition, str) else json.dumps(definition)
    return await client.post("/app/workflows", data={"definition": text, "csrf_token": token})


def mail_settings(peer: Any) -> dict[str, Any]:
    """The server's own SMTP settings, pointed at an `smtp_peer`."""
    return {
        "smtp_host": "127.0.0.1",
        "smtp_port": peer.port,
        "smtp_security": "none",
        "smtp_username": peer.username,
        "smtp_password": peer.password,
        "mail_from": "levqor@example.com",
    }


def record_statements(runtime: Runtime) -> list[str]:
    """The SQL the runtime's write connections run from now on, in order. On PostgreSQL
    from SQLAlchemy's events (an executemany is one entry); on SQLite from SQLite's own
    trace, which also sees what the queue runs on the driver's thread outside SQLAlchemy
    (an executemany is one entry per row, and COMMIT is seen)."""
    seen: list[str] = []
    engine = runtime.db.engine.sync_engine
    if not runtime.db.is_sqlite:

        def executed(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            seen.append(statement)

        event.listen(engine, "before_cursor_execute", executed)
        return seen

    def traced(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if record.info.get("levqor_trace") is not seen:  # once per connection
            await_only(dbapi_connection.driver_connection.set_trace_callback(seen.append))
            record.info["levqor_trace"] = seen

    event.listen(engine, "checkout", traced)
    return seen
