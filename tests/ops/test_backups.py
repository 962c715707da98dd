"""Backups: a restore into a fresh database gives identical row counts and data that
decrypts; a flipped byte fails verification naming the file; a backup taken while runs are
written is consistent; old ones are pruned; the scheduler takes, verifies and watches them.
On SQLite and on PostgreSQL (whichever the suite runs on)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from levqor.accounts.models import User
from levqor.cli import app as cli_app
from levqor.config import Settings
from levqor.connectors.models import Credential
from levqor.db.base import utcnow
from levqor.jobs.models import Job
from levqor.jobs.scheduler import Scheduler
from levqor.ops import backups
from levqor.ops.models import Alert, Backup
from levqor.runtime import Runtime
from tests.conftest import serve_app
from tests.factories import add_credential, make_admin, make_workflow, start
from tests.peers import free_port


async def some_data(client: httpx.AsyncClient, signup: Any, runs: int = 3) -> Any:
    account = await signup()
    assert (await add_credential(client, account)).status_code == 201  # a sealed secret
    workflow = await make_workflow(client, account, {"id": "a", "connector": "transform"})
    for _ in range(runs):
        await start(client, account, workflow)
    return account


async def count(runtime: Runtime, model: Any) -> int:
    async with runtime.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_a_backup_restores_with_its_rows_and_data_that_decrypts(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    await some_data(client, signup)
    taken = await backups.run(runtime.db, runtime.settings)
    checked = await backups.verify(runtime.db, runtime.settings, taken.id)
    assert (checked.ok, checked.problems) == (True, [])
    manifest = json.loads((runtime.settings.backups_path / taken.id / "manifest.json").read_text())
    assert manifest["row_counts"]["users"] == 1
    assert manifest["row_counts"]["jobs"] == 3
    assert manifest["revision"]
    await some_data(client, signup, runs=2)  # written after the backup: lost by a restore
    assert await count(runtime, Job) == 5
    await backups.restore(runtime.db, runtime.settings, taken.id)
    assert await count(runtime, User) == 1
    assert await count(runtime, Job) == 3
    async with runtime.db.read() as session:
        [credential] = (await session.scalars(select(Credential))).all()
        [user] = (await session.scalars(select(User))).all()  # its e-mail sealed
    assert credential.connector == "slack"
    assert "bot_token" in runtime.cipher.decrypt(credential.secret_encrypted.encode()).decode()
    assert user.email.endswith("@example.com")


async def test_a_flipped_byte_fails_verification_naming_the_file(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    await some_data(client, signup)
    taken = await backups.run(runtime.db, runtime.settings)
    [database] = [
        path
        for path in (runtime.settings.backups_path / taken.id).iterdir()
        if path.name.startswith("database.")
    ]
    raw = bytearray(database.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    database.write_bytes(bytes(raw))
    checked = await backups.verify(runtime.db, runtime.settings, taken.id)
    assert checked.ok is False
    assert checked.problems == [f"{database.name}: checksum differs (the file changed)"]
    async with runtime.db.read() as session:
        row = await session.get(Backup, taken.id)
        assert row is not None
        assert (row.verify_ok, row.verify_error) == (False, checked.problems[0])
        [alert] = (await session.scalars(select(Alert))).all()
    assert alert.title == f"Backup {taken.id} failed its verification"
    with pytest.raises(backups.BackupFailed, match="damaged"):
        await backups.restore(runtime.db, runtime.settings, taken.id)


async def test_a_backup_taken_while_runs_are_written_is_consistent(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await some_data(client, signup, runs=1)
    workflow = await make_workflow(client, account, {"id": "b", "connector": "transform"})
    writing = True

    async def keep_writing() -> int:
        written = 0
        while writing:
            assert (await start(client, account, workflow)).status_code == 202
            written += 1
        return written

    writer = asyncio.create_task(keep_writing())
    await asyncio.sleep(0)  # the writer is under way
    taken = await backups.run(runtime.db, runtime.settings)
    writing = False
    written = await writer
    checked = await backups.verify(runtime.db, runtime.settings, taken.id)
    assert (checked.ok, checked.problems) == (True, [])
    manifest = json.loads((runtime.settings.backups_path / taken.id / "manifest.json").read_text())
    assert 1 <= manifest["row_counts"]["jobs"] <= 1 + written  # one moment, whole


async def test_only_the_newest_backups_are_kept(
    make_settings: Any, fresh_database: None, signup: Any
) -> None:
    settings: Settings = make_settings(backup_keep=2)
    async with serve_app(settings) as (_client, runtime):
        taken = [await backups.run(runtime.db, settings) for _ in range(3)]
        kept = [backup.id for backup in await backups.listed(runtime.db)]
    assert kept == [taken[2].id, taken[1].id]
    assert sorted(path.name for path in settings.backups_path.iterdir()) == sorted(kept)


async def test_the_scheduler_takes_verifies_and_watches_backups(
    make_settings: Any, fresh_database: None
) -> None:
    settings: Settings = make_settings(backups_enabled=True)
    async with serve_app(settings) as (_client, runtime):
        await Scheduler(runtime).tick(utcnow())
        [taken] = await backups.listed(runtime.db)
        assert (taken.status, taken.verify_ok) == ("ok", True)
        async with runtime.db.write() as session, session.begin():  # two days pass
            await session.execute(update(Backup).values(created_at=utcnow() - timedelta(days=2)))
        await backups._alert_if_stale(runtime.db, settings, utcnow())
        async with runtime.db.read() as session:
            stale = await session.scalar(select(Alert).where(Alert.key == "backup_stale"))
        assert stale is not None
        assert stale.title == "No recent verified backup"
        await backups.nightly(runtime.db, settings)  # a day old: a new one, and resolved
        async with runtime.db.read() as session:
            assert (await session.get(Alert, stale.id)).resolved_at is not None  # type: ignore[union-attr]
        assert len(await backups.listed(runtime.db)) == 2


async def test_admins_see_the_catalogue(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    admin = await some_data(client, signup)
    assert (await client.get("/api/v1/admin/backups", headers=admin.headers)).status_code == 403
    await make_admin(runtime, admin)
    taken = await backups.run(runtime.db, runtime.settings)
    await backups.verify(runtime.db, runtime.settings)
    listed = (await client.get("/api/v1/admin/backups", headers=admin.headers)).json()
    assert [(b["id"], b["status"], b["verify_ok"]) for b in listed] == [(taken.id, "ok", True)]
    assert listed[0]["size_bytes"] > 0


def test_the_cli_takes_lists_and_verifies(cli_env: Settings) -> None:
    runner = CliRunner()
    taken = runner.invoke(cli_app, ["backup", "run", "--json"])
    assert taken.exit_code == 0, taken.output
    backup_id = json.loads(taken.stdout)["id"]
    verified = runner.invoke(cli_app, ["backup", "verify", backup_id, "--json"])
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.stdout)["ok"] is True
    listed = runner.invoke(cli_app, ["backup", "list", "--json"])
    assert [(b["id"], b["verify_ok"]) for b in json.loads(listed.stdout)] == [(backup_id, True)]
    missing = runner.invoke(cli_app, ["backup", "verify", "bkp_none"])
    assert missing.exit_code == 1
    assert "No such backup" in missing.output


@pytest.fixture
def s3_peer(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's S3 server on loopback, with a bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    for name, value in (
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(name, value)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=url).create_bucket(Bucket="levqor-backups")
    yield url
    server.stop()


async def test_copies_go_to_an_s3_bucket_and_an_rclone_remote(
    make_settings: Any, fresh_database: None, s3_peer: str, tmp_path: Path
) -> None:
    import boto3

    settings: Settings = make_settings(
        backup_s3_url="s3://levqor-backups/nightly",
        backup_s3_endpoint_url=s3_peer,
        backup_rclone_remote=f":local:{tmp_path / 'remote'}",
    )
    async with serve_app(settings) as (_client, runtime):
        taken = await backups.run(runtime.db, settings)
    assert taken.offsite == {"s3": "ok", "rclone": "ok"}
    local = settings.backups_path / taken.id
    manifest = json.loads((local / "manifest.json").read_text())
    bucket = boto3.client("s3", endpoint_url=s3_peer)
    keys = {item["Key"] for item in bucket.list_objects_v2(Bucket="levqor-backups")["Contents"]}
    assert keys == {f"nightly/{taken.id}/{path.name}" for path in local.iterdir()}
    for entry in manifest["files"]:
        copied = bucket.get_object(
            Bucket="levqor-backups", Key=f"nightly/{taken.id}/{entry['name']}"
        )
        assert hashlib.sha256(copied["Body"].read()).hexdigest() == entry["sha256"]
        remote = tmp_path / "remote" / taken.id / entry["name"]
        assert hashlib.sha256(remote.read_bytes()).hexdigest() == entry["sha256"]


async def test_a_failed_off_site_copy_is_alerted_and_the_backup_kept(
    make_settings: Any, fresh_database: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    settings: Settings = make_settings(
        backup_s3_url="s3://levqor-backups",
        backup_s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
    )
    async with serve_app(settings) as (_client, runtime):
        taken = await backups.run(runtime.db, settings)
        checked = await backups.verify(runtime.db, settings, taken.id)
        async with runtime.db.read() as session:
            [alert] = (await session.scalars(select(Alert))).all()
    assert taken.offsite["s3"].startswith("failed: ")
    assert checked.ok is True  # the local backup is good
    assert alert.title == f"The off-site copy of backup {taken.id} failed"


async def test_an_encrypted_backup_holds_nothing_readable_and_still_restores(
    make_settings: Any, fresh_database: None, signup: Any
) -> None:
    settings: Settings = make_settings(backup_encrypt=True)
    async with serve_app(settings) as (client, runtime):
        account = await signup_through(client)
        taken = await backups.run(runtime.db, settings)
        folder = settings.backups_path / taken.id
        [database] = [path for path in folder.iterdir() if path.name.startswith("database.")]
        assert database.name.endswith(".sealed")
        raw = database.read_bytes()
        assert b"SQLite format 3" not in raw
        assert b"PGDMP" not in raw
        assert account.encode() not in raw
        checked = await backups.verify(runtime.db, settings, taken.id)
        assert (checked.ok, checked.problems) == (True, [])
        await backups.restore(runtime.db, settings, taken.id)
        assert await count(runtime, User) == 1
    stranger: Settings = make_settings(
        backup_encrypt=True, encryption_keys=[Fernet.generate_key().decode()]
    )
    async with serve_app(stranger) as (_client, runtime):
        async with runtime.db.write() as session, session.begin():
            session.add(
                Backup(
                    id=taken.id,
                    backend=taken.backend,
                    status="ok",
                    manifest_sha256=taken.manifest_sha256,
                    size_bytes=1,
                    took_s=0,
                )
            )
        refused = await backups.verify(runtime.db, stranger, taken.id)
    assert refused.ok is False
    assert refused.problems == [f"{database.name}: a chunk does not open with these keys"]


async def test_the_generated_keys_are_sealed_with_the_passphrase(
    make_settings: Any, fresh_database: None
) -> None:
    settings: Settings = make_settings(backup_passphrase="correct horse battery staple")
    secrets_file = settings.data_dir / "secrets.json"
    secrets_file.parent.mkdir(parents=True, exist_ok=True)
    secrets_file.write_text(
        json.dumps({"encryption_keys": [settings.encryption_keys[0].get_secret_value()]})
    )
    async with serve_app(settings) as (_client, runtime):
        taken = await backups.run(runtime.db, settings)
        folder = settings.backups_path / taken.id
        assert not (folder / "secrets.json").exists()
        sealed = (folder / "secrets.json.sealed").read_bytes()
        assert settings.encryption_keys[0].get_secret_value().encode() not in sealed
        assert (await backups.verify(runtime.db, settings, taken.id)).ok is True
        manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["secrets"] == "included, sealed with the backup passphrase"


async def signup_through(client: httpx.AsyncClient) -> str:
    from tests.conftest import PASSWORD

    answer = await client.post(
        "/api/v1/auth/signup", json={"email": "sealed@example.com", "password": PASSWORD}
    )
    assert answer.status_code == 201
    return "sealed@example.com"
