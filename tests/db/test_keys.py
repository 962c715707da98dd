"""`levqor keys rotate`: every sealed value moves to the new key while Levqor runs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet, MultiFernet
from pydantic import SecretStr
from sqlalchemy import select
from typer.testing import CliRunner

from levqor.bootstrap import build_runtime
from levqor.cli import app as cli_app
from levqor.config import Settings, read_stored_secrets, stored_keys
from levqor.crypto import build_cipher
from levqor.db import rotation
from levqor.jobs.worker import Worker
from levqor.runtime import Runtime
from tests.factories import SECRET, add_credential, job, make_workflow, start


async def sealed_values(runtime: Runtime) -> list[str]:
    values = []
    async with runtime.db.read() as session:
        for sealed in rotation.sealed_columns():
            query = select(sealed.raw).where(sealed.column.is_not(None))
            values += [row[0] for row in await session.execute(query)]
    return values


async def seed_secrets(client: httpx.AsyncClient, account: Any, peer_url: str) -> str:
    """A credential, a webhook workflow's token and a callback secret: one of each."""
    credential_id: str = (await add_credential(client, account, base_url=peer_url)).json()["id"]
    await client.post(
        "/api/v1/workflows",
        headers=account.headers,
        json={"definition": {"name": "hook", "trigger": {"type": "webhook"}, "steps": []}},
    )
    await client.get("/api/v1/callbacks/secret", headers=account.headers)
    return credential_id


def slack_step(credential_id: str) -> dict[str, Any]:
    return {
        "id": "notify",
        "connector": "slack",
        "credential": credential_id,
        "params": {"channel": "#a", "text": "hi"},
    }


async def test_rotation_moves_every_secret_to_the_new_key_while_jobs_run(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, settings: Settings, http_peer: Any
) -> None:
    account = await signup()
    credential_id = await seed_secrets(client, account, http_peer.url)
    workflow_id = await make_workflow(client, account, slack_step(credential_id))
    jobs = [(await start(client, account, workflow_id)).json()["job_id"] for _ in range(5)]
    new_key = Fernet.generate_key().decode()
    # Step one of the procedure: every process gets the new key first, the old after it.
    ring = [SecretStr(new_key), *settings.encryption_keys]
    rotated = settings.model_copy(update={"encryption_keys": ring})
    runtime.cipher.extend([key.get_secret_value() for key in ring])  # this process too
    running = build_runtime(rotated)
    worker = Worker(running, concurrency=2)
    before = await sealed_values(runtime)
    rewritten, _ = await asyncio.gather(
        rotation.rotate_all(running.db, build_cipher(rotated)), worker.drain()
    )
    await worker.http.aclose()
    await running.close()
    assert rewritten == len(before) >= 3
    only_new = MultiFernet([Fernet(new_key)])
    after = await sealed_values(runtime)
    assert not set(after) & set(before)
    assert all(only_new.decrypt(value.encode()) for value in after)
    assert [(await job(client, account, job_id))["status"] for job_id in jobs] == ["succeeded"] * 5


@pytest.fixture
def generated_ring_env(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Settings:
    """A data directory whose generated ring holds this test's key, as `levqor up` has."""
    key = settings.encryption_keys[0].get_secret_value()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    (settings.data_dir / "secrets.json").write_text(
        '{"jwt_secret": "%s", "encryption_key": "%s"}' % ("j" * 48, key)  # noqa: UP031
    )
    monkeypatch.setenv("LEVQOR_DATA_DIR", str(settings.data_dir))
    monkeypatch.delenv("LEVQOR_ENCRYPTION_KEYS", raising=False)
    monkeypatch.delenv("LEVQOR_JWT_SECRET", raising=False)
    if settings.database_url:
        monkeypatch.setenv("LEVQOR_DATABASE_URL", settings.database_url)
    return settings


async def test_the_cli_adds_a_key_and_running_processes_follow(
    client: httpx.AsyncClient,
    signup: Any,
    runtime: Runtime,
    generated_ring_env: Settings,
    http_peer: Any,
) -> None:
    account = await signup()
    credential_id = await seed_secrets(client, account, http_peer.url)
    result = await asyncio.to_thread(CliRunner().invoke, cli_app, ["keys", "rotate", "--json"])
    assert result.exit_code == 0, result.output
    assert '"keys_in_ring": 2' in result.output
    stored = read_stored_secrets(generated_ring_env.data_dir)
    assert stored is not None
    new_key, old_key = stored_keys(stored)
    assert old_key == generated_ring_env.encryption_keys[0].get_secret_value()
    only_new = MultiFernet([Fernet(new_key)])
    assert all(only_new.decrypt(value.encode()) for value in await sealed_values(runtime))
    # This process was started with the old ring only: it follows the file, and its
    # steps still open the credential.
    job_id = (
        await start(
            client, account, await make_workflow(client, account, slack_step(credential_id))
        )
    ).json()["job_id"]
    worker = Worker(runtime, concurrency=1)
    await worker.drain()
    await worker.http.aclose()
    assert (await job(client, account, job_id))["status"] == "succeeded"
    assert http_peer.requests[0]["headers"]["authorization"] == f"Bearer {SECRET}"
    assert only_new.decrypt(runtime.cipher.encrypt(b"x")) == b"x"  # new ones: new key
