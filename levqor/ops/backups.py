"""Backups you know work: taken online, checked file by file, restored into a scratch
database to prove it, kept for a while, and restored for real when needed.

A backup is a folder `<backup dir>/<id>/`:

- `database.sqlite3` (SQLite's online backup API: writers keep working, the copy is one
  consistent snapshot) or `database.pgdump` (`pg_dump -Fc` of an exported snapshot, the
  same snapshot the row counts were taken in);
- `secrets.json`, the generated keys of the data directory when there are any (mode
  0600): a restore that cannot decrypt the data is no restore;
- `manifest.json`: the SHA-256 and size of each file, the app version, the migration
  revision and the row count of every table.

`verify` re-checks every checksum, restores into a scratch database (a temporary SQLite
file, or a temporary PostgreSQL database), runs the integrity check, compares the row
counts with the manifest and decrypts a sample of every sealed column with the backup's
keys. The outcome and how long it took are recorded; a failure is alerted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, create_async_engine

from levqor import __version__
from levqor.config import Settings, stored_keys
from levqor.db import migrate
from levqor.db.base import utcnow
from levqor.db.engine import Database
from levqor.db.rotation import sealed_columns
from levqor.errors import InvalidRequest, NotFound
from levqor.logging import get_logger
from levqor.ops import alerts, sealing
from levqor.ops.models import Backup
from levqor.periodic import TickTask, at_most_every

log = get_logger(__name__)

DATABASE_FILE = {"sqlite": "database.sqlite3", "postgresql": "database.pgdump"}
MANIFEST = "manifest.json"
SECRETS = "secrets.json"
SEALED = ".sealed"
SAMPLE = 20  # sealed values decrypted per column when verifying
CHUNK = 1024 * 1024
STALE_GRACE = timedelta(hours=2)


class BackupFailed(InvalidRequest):
    """The backup could not be taken, verified or restored."""

    status = 500
    code = "backup_failed"


def _backend(settings: Settings) -> str:
    return "sqlite" if settings.is_sqlite else "postgresql"


def _sqlite_path(settings: Settings) -> Path:
    return Path(make_url(settings.sqlalchemy_url).database or "")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- taking one ----------------------------------------------------------------------


async def run(db: Database, settings: Settings) -> Backup:
    """Take a backup and catalogue it (a failed one too, with why); keep the newest
    `LEVQOR_BACKUP_KEEP`. A failure is alerted, and raised as BackupFailed."""
    backup_id = f"bkp_{utcnow():%Y%m%dT%H%M%SZ}_{secrets.token_hex(3)}"
    folder = settings.backups_path / backup_id
    started = time.perf_counter()
    row = Backup(id=backup_id, created_at=utcnow(), backend=_backend(settings), status="ok")
    try:
        folder.mkdir(parents=True, mode=0o700)
        manifest = await _take(settings, folder)
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        row.manifest_sha256 = sha256_of(folder / MANIFEST)
        row.size_bytes = sum(path.stat().st_size for path in folder.iterdir())
    except Exception as exc:  # noqa: BLE001  every failure is catalogued and alerted
        row.status, row.error = "failed", f"{type(exc).__name__}: {exc}"[:2000]
        shutil.rmtree(folder, ignore_errors=True)
    if row.status == "ok":
        row.offsite = await ship(settings, folder)
    row.took_s = round(time.perf_counter() - started, 3)
    async with db.session(write=True) as session, session.begin():
        session.add(row)
    failed_copies = {where: said for where, said in row.offsite.items() if said != "ok"}
    if failed_copies:
        await alerts.alert(
            db,
            settings,
            "warning",
            f"The off-site copy of backup {backup_id} failed",
            "; ".join(f"{where}: {said}" for where, said in failed_copies.items()),
        )
    if row.status == "failed":
        await alerts.alert(db, settings, "critical", "Backup failed", row.error or "")
        raise BackupFailed(f"The backup failed: {row.error}")
    await prune(db, settings)
    log.info("backup_taken", backup=backup_id, size=row.size_bytes, took_s=row.took_s)
    return row


async def _take(settings: Settings, folder: Path) -> dict[str, Any]:
    backend = _backend(settings)
    database = folder / DATABASE_FILE[backend]
    if backend == "sqlite":
        counts = await asyncio.to_thread(_sqlite_backup, _sqlite_path(settings), database)
    else:
        counts = await _pg_dump(settings, database)
    if settings.backup_encrypt:
        sealed = database.with_name(database.name + SEALED)
        await asyncio.to_thread(sealing.seal_file, _settings_cipher(settings), database, sealed)
        database.unlink()
        database = sealed
    files = [database, *_keep_secrets(settings, folder)]
    return {
        "id": folder.name,
        "created_at": utcnow().isoformat(),
        "app_version": __version__,
        "revision": await migrate.current_revision(settings),
        "backend": backend,
        "database": database.name,
        "encrypted": settings.backup_encrypt,
        "row_counts": counts,
        "secrets": _secrets_said(files),
        "files": [
            {"name": path.name, "size": path.stat().st_size, "sha256": sha256_of(path)}
            for path in files
        ],
    }


def _keep_secrets(settings: Settings, folder: Path) -> list[Path]:
    """The data directory's generated keys, sealed with the passphrase when one is set,
    else as they are (mode 0600)."""
    generated = settings.data_dir / SECRETS
    if not generated.exists():
        return []
    if settings.backup_passphrase is not None:
        target = folder / (SECRETS + SEALED)
        target.write_bytes(
            sealing.seal_with_passphrase(
                settings.backup_passphrase.get_secret_value(),
                generated.read_bytes(),
                secrets.token_bytes(sealing.SALT_BYTES),
            )
        )
    else:
        target = folder / SECRETS
        shutil.copyfile(generated, target)
    target.chmod(0o600)
    return [target]


def _secrets_said(files: list[Path]) -> str:
    names = {path.name for path in files}
    if SECRETS + SEALED in names:
        return "included, sealed with the backup passphrase"
    if SECRETS in names:
        return "included (mode 0600; set LEVQOR_BACKUP_PASSPHRASE to seal them)"
    return "not generated here (set by settings)"


def _settings_cipher(settings: Settings) -> MultiFernet:
    return MultiFernet([Fernet(key.get_secret_value()) for key in settings.encryption_keys])


def _sqlite_backup(source: Path, target: Path) -> dict[str, int]:
    """SQLite's online backup in one step: a consistent snapshot that writers, in WAL
    mode, never wait for; the row counts are read from the copy itself."""
    with (
        contextlib.closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as origin,
        contextlib.closing(sqlite3.connect(target)) as copy,
    ):
        origin.backup(copy)
        return _sqlite_counts(copy)


def _sqlite_counts(connection: sqlite3.Connection) -> dict[str, int]:
    tables = [
        name
        for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    return {
        # names from the database's own catalogue, not from anyone's input
        table: int(connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])  # noqa: S608
        for table in sorted(tables)
    }


def _libpq(settings: Settings, database: str | None = None) -> tuple[str, dict[str, str]]:
    """A libpq URL without the password (that goes in the environment, not argv)."""
    url = make_url(settings.sqlalchemy_url).set(drivername="postgresql")
    if database is not None:
        url = url.set(database=database)
    env = {"LC_ALL": "C.UTF-8"}  # no inherited PG* variable may redirect the tools
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    return url.set(password=None).render_as_string(hide_password=False), env


async def _command(*argv: str, env: dict[str, str]) -> None:
    program = shutil.which(argv[0])
    if program is None:
        raise BackupFailed(f"{argv[0]} is not installed (apt-get install postgresql-client)")
    process = await asyncio.create_subprocess_exec(
        program, *argv[1:], env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _out, err = await process.communicate()
    if process.returncode != 0:
        raise BackupFailed(f"{argv[0]} failed: {err.decode(errors='replace')[-1000:]}")


async def _pg_dump(settings: Settings, target: Path) -> dict[str, int]:
    """`pg_dump -Fc` of a snapshot exported from a repeatable-read transaction, the row
    counts taken in that same snapshot: the manifest describes exactly the dump."""
    url, env = _libpq(settings)
    engine = create_async_engine(settings.sqlalchemy_url, poolclass=None)
    try:
        async with engine.connect() as probe:
            await _check_client_version(probe)
        async with engine.connect() as connection:
            connection = await connection.execution_options(isolation_level="REPEATABLE READ")
            async with connection.begin():
                snapshot = await connection.scalar(text("SELECT pg_export_snapshot()"))
                counts = await _pg_counts(connection)
                await _command(
                    "pg_dump",
                    "--format=custom",
                    f"--snapshot={snapshot}",
                    f"--file={target}",
                    f"--dbname={url}",
                    env=env,
                )
    finally:
        await engine.dispose()
    return counts


async def _check_client_version(connection: AsyncConnection) -> None:
    """pg_dump must be the server's major version or newer: an older one refuses, or
    writes a dump that misses what it does not know."""
    program = shutil.which("pg_dump")
    if program is None:
        raise BackupFailed("pg_dump is not installed (apt-get install postgresql-client)")
    process = await asyncio.create_subprocess_exec(
        program, "--version", stdout=asyncio.subprocess.PIPE
    )
    said, _ = await process.communicate()
    found = re.search(r"(\d+)(?:\.\d+)?", said.decode())
    client = int(found.group(1)) if found else 0
    server = int(await connection.scalar(text("SHOW server_version_num")) or 0) // 10000
    if client < server:
        raise BackupFailed(
            f"pg_dump {client} is older than the PostgreSQL {server} server: install "
            f"postgresql-client-{server} or newer"
        )


async def _pg_counts(connection: AsyncConnection) -> dict[str, int]:
    tables = (
        await connection.scalars(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
        )
    ).all()
    return {
        table: int(await connection.scalar(text(f'SELECT count(*) FROM "{table}"')) or 0)  # noqa: S608
        for table in tables
    }


# --- off-site ------------------------------------------------------------------------


async def ship(settings: Settings, folder: Path) -> dict[str, str]:
    """Copy the backup's folder to each configured off-site place; each one's outcome
    ("ok", or why not). A failed copy leaves the local backup good."""
    outcomes: dict[str, str] = {}
    if settings.backup_s3_url:
        outcomes["s3"] = await _attempt(asyncio.to_thread(_to_s3, settings, folder))
    if settings.backup_rclone_remote:
        target = f"{settings.backup_rclone_remote.rstrip('/')}/{folder.name}"
        outcomes["rclone"] = await _attempt(
            _command("rclone", "copy", str(folder), target, env={"HOME": str(Path.home())})
        )
    return outcomes


async def _attempt(copy: Any) -> str:
    try:
        await copy
    except Exception as exc:  # noqa: BLE001  the outcome is recorded and alerted
        return f"failed: {type(exc).__name__}: {exc}"[:500]
    return "ok"


def _to_s3(settings: Settings, folder: Path) -> None:
    import boto3  # loaded by the first off-site copy, not at every start

    assert settings.backup_s3_url is not None
    bucket, _, prefix = settings.backup_s3_url.removeprefix("s3://").partition("/")
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=settings.backup_s3_endpoint_url,
        config=Config(connect_timeout=10, read_timeout=60, retries={"max_attempts": 3}),
    )
    for path in sorted(folder.iterdir()):
        key = "/".join(part for part in (prefix.strip("/"), folder.name, path.name) if part)
        client.upload_file(str(path), bucket, key)


# --- the catalogue -------------------------------------------------------------------


async def listed(db: Database, *, limit: int = 100) -> list[Backup]:
    async with db.session(write=False) as session:
        rows = await session.scalars(
            select(Backup).order_by(Backup.created_at.desc(), Backup.id.desc()).limit(limit)
        )
        return list(rows)


async def find(db: Database, backup_id: str | None) -> Backup:
    """The backup `backup_id`, or the newest good one."""
    async with db.session(write=False) as session:
        query = select(Backup).where(Backup.status == "ok")
        if backup_id:
            query = query.where(Backup.id == backup_id)
        found = await session.scalar(query.order_by(Backup.created_at.desc()).limit(1))
    if found is None:
        raise NotFound(f"No such backup: {backup_id}" if backup_id else "No backup yet.")
    return found


async def prune(db: Database, settings: Settings) -> list[str]:
    """Delete all but the newest `LEVQOR_BACKUP_KEEP` backups (files and rows)."""
    every = await listed(db, limit=100_000)
    gone = every[settings.backup_keep :]
    for backup in gone:
        shutil.rmtree(settings.backups_path / backup.id, ignore_errors=True)
    if gone:
        async with db.session(write=True) as session, session.begin():
            for backup in gone:
                await session.delete(await session.get(Backup, backup.id))
    return [backup.id for backup in gone]


# --- proving one ---------------------------------------------------------------------


@dataclass(frozen=True)
class Verification:
    backup_id: str
    ok: bool
    problems: list[str]
    took_s: float


async def verify(db: Database, settings: Settings, backup_id: str | None = None) -> Verification:
    """Check a backup (the newest good one by default) end to end and record how it went."""
    backup = await find(db, backup_id)
    started = time.perf_counter()
    folder = settings.backups_path / backup.id
    try:
        problems = _checksum_problems(folder, backup.manifest_sha256)
        if not problems:
            manifest = json.loads((folder / MANIFEST).read_text())
            problems = await _restore_problems(settings, folder, manifest)
    except Exception as exc:  # noqa: BLE001  a verification that breaks is a failed one
        problems = [f"{type(exc).__name__}: {exc}"]
    outcome = Verification(
        backup.id, not problems, problems, round(time.perf_counter() - started, 3)
    )
    async with db.session(write=True) as session, session.begin():
        row = await session.get(Backup, backup.id)
        assert row is not None
        row.verified_at, row.verify_ok = utcnow(), outcome.ok
        row.verify_error = "; ".join(problems)[:2000] or None
        row.verify_took_s = outcome.took_s
    if not outcome.ok:
        await alerts.alert(
            db,
            settings,
            "critical",
            f"Backup {backup.id} failed its verification",
            "; ".join(problems)[:3000],
        )
    return outcome


def _checksum_problems(folder: Path, manifest_sha256: str | None) -> list[str]:
    if not (folder / MANIFEST).exists():
        return [f"{MANIFEST}: missing"]
    if manifest_sha256 and sha256_of(folder / MANIFEST) != manifest_sha256:
        return [f"{MANIFEST}: its checksum differs from the one catalogued"]
    manifest = json.loads((folder / MANIFEST).read_text())
    problems = []
    for entry in manifest["files"]:
        path = folder / entry["name"]
        if not path.exists():
            problems.append(f"{entry['name']}: missing")
        elif sha256_of(path) != entry["sha256"]:
            problems.append(f"{entry['name']}: checksum differs (the file changed)")
    return problems


async def _restore_problems(
    settings: Settings, folder: Path, manifest: dict[str, Any]
) -> list[str]:
    with tempfile.TemporaryDirectory() as scratch_dir:
        try:
            cipher = _cipher(settings, folder)
            database = await _clear_database(folder, manifest, cipher, Path(scratch_dir))
        except sealing.Unsealable as exc:
            return [f"{manifest.get('database')}: {exc}"]
        return await _restored_problems(settings, database, manifest, cipher)


async def _clear_database(
    folder: Path, manifest: dict[str, Any], cipher: MultiFernet, scratch: Path
) -> Path:
    """The backup's database file in clear: itself, or opened into `scratch`."""
    name = manifest.get("database") or DATABASE_FILE[manifest["backend"]]
    if not manifest.get("encrypted"):
        return folder / name
    clear = scratch / name.removesuffix(SEALED)
    await asyncio.to_thread(sealing.open_file, cipher, folder / name, clear)
    return clear


async def _restored_problems(
    settings: Settings, database: Path, manifest: dict[str, Any], cipher: MultiFernet
) -> list[str]:
    if manifest["backend"] == "sqlite":
        return await asyncio.to_thread(_sqlite_scratch_problems, database, manifest, cipher)
    async with _scratch_postgres(settings) as scratch:
        url, env = _libpq(settings, scratch)
        await _command(
            "pg_restore", "--no-owner", "--exit-on-error", f"--dbname={url}", str(database), env=env
        )
        engine = create_async_engine(_async_url(settings, scratch))
        try:
            async with engine.connect() as connection:
                problems = _count_problems(await _pg_counts(connection), manifest["row_counts"])
                problems += await _pg_decrypt_problems(connection, cipher)
        finally:
            await engine.dispose()
    return problems


def _cipher(settings: Settings, folder: Path) -> MultiFernet:
    """The keys a restore would have: the installation's ring (from the settings, or
    generated into the data directory) and the generated ones the backup carries."""
    keys = [key.get_secret_value() for key in settings.encryption_keys]
    carried = _carried_secrets(settings, folder)
    if carried is not None:
        keys += stored_keys(json.loads(carried))
    return MultiFernet([Fernet(key) for key in dict.fromkeys(keys)])


def _carried_secrets(settings: Settings, folder: Path) -> bytes | None:
    """The generated keys the backup carries, opened; None if it carries none (or they
    are sealed and no passphrase is set)."""
    if (folder / SECRETS).exists():
        return (folder / SECRETS).read_bytes()
    sealed = folder / (SECRETS + SEALED)
    if sealed.exists() and settings.backup_passphrase is not None:
        return sealing.open_with_passphrase(
            settings.backup_passphrase.get_secret_value(), sealed.read_bytes()
        )
    return None


def _count_problems(found: dict[str, int], expected: dict[str, int]) -> list[str]:
    return [
        f"{table}: {found.get(table)} rows restored, {count} in the manifest"
        for table, count in sorted(expected.items())
        if found.get(table) != count
    ]


def _sqlite_scratch_problems(
    database: Path, manifest: dict[str, Any], cipher: MultiFernet
) -> list[str]:
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "restored.sqlite3"
        shutil.copyfile(database, copy)
        with contextlib.closing(sqlite3.connect(copy)) as connection:
            integrity = connection.execute("PRAGMA integrity_check").fetchone()[0]
            if integrity != "ok":
                return [f"{database.name}: integrity check says {integrity}"]
            problems = _count_problems(_sqlite_counts(connection), manifest["row_counts"])
            for sealed in sealed_columns():
                table, column = sealed.table.name, sealed.column.name
                values = connection.execute(_sample_sql(table, column)).fetchall()
                problems += _decrypt_problems(cipher, f"{table}.{column}", [v for (v,) in values])
    return problems


async def _pg_decrypt_problems(connection: AsyncConnection, cipher: MultiFernet) -> list[str]:
    problems = []
    for sealed in sealed_columns():
        table, column = sealed.table.name, sealed.column.name
        values = (await connection.scalars(text(_sample_sql(table, column)))).all()
        problems += _decrypt_problems(cipher, f"{table}.{column}", list(values))
    return problems


def _sample_sql(table: str, column: str) -> str:
    """Names from the models' own metadata, not from anyone's input."""
    return f'SELECT "{column}" FROM "{table}" WHERE "{column}" IS NOT NULL LIMIT {SAMPLE}'  # noqa: S608


def _decrypt_problems(cipher: MultiFernet, where: str, values: list[Any]) -> list[str]:
    for value in values:
        try:
            cipher.decrypt(str(value).encode())
        except InvalidToken:
            return [f"{where}: does not decrypt with the backup's keys"]
    return []


def _async_url(settings: Settings, database: str) -> str:
    return (
        make_url(settings.sqlalchemy_url)
        .set(database=database)
        .render_as_string(hide_password=False)
    )


@contextlib.asynccontextmanager
async def _scratch_postgres(settings: Settings) -> AsyncIterator[str]:
    """A temporary database on the same server, dropped afterwards."""
    name = f"levqor_verify_{secrets.token_hex(6)}"
    admin = create_async_engine(settings.sqlalchemy_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield name
        finally:
            async with admin.connect() as connection:
                await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


# --- using one -----------------------------------------------------------------------


async def restore(db: Database, settings: Settings, backup_id: str) -> Backup:
    """Put a backup back in place of the live database (and its generated keys). Its
    checksums are checked first; on SQLite, stop Levqor before (the file is replaced)."""
    backup = await find(db, backup_id)
    folder = settings.backups_path / backup.id
    problems = _checksum_problems(folder, backup.manifest_sha256)
    if problems:
        raise BackupFailed(f"Backup {backup.id} is damaged: {'; '.join(problems)}")
    manifest = json.loads((folder / MANIFEST).read_text())
    if manifest["backend"] != _backend(settings):
        raise BackupFailed(
            f"Backup {backup.id} is of {manifest['backend']}, not {_backend(settings)}"
        )
    try:
        carried = _carried_secrets(settings, folder)
    except sealing.Unsealable as exc:
        raise BackupFailed(f"Backup {backup.id}: {exc}") from exc
    await db.dispose()  # no pooled connection keeps the old database open
    with tempfile.TemporaryDirectory() as scratch:
        try:
            database = await _clear_database(
                folder, manifest, _cipher(settings, folder), Path(scratch)
            )
        except sealing.Unsealable as exc:
            raise BackupFailed(f"Backup {backup.id}: {exc}") from exc
        if manifest["backend"] == "sqlite":
            _restore_sqlite(database, _sqlite_path(settings))
        else:
            url, env = _libpq(settings)
            await _command(
                "pg_restore",
                "--clean",
                "--if-exists",
                "--no-owner",
                "--single-transaction",
                "--exit-on-error",
                f"--dbname={url}",
                str(database),
                env=env,
            )
    if carried is not None:
        live = settings.data_dir / SECRETS
        if live.exists() and live.read_bytes() != carried:
            live.rename(live.with_name(f"{SECRETS}.before-{backup.id}"))
        live.write_bytes(carried)
        live.chmod(0o600)
    log.warning("backup_restored", backup=backup.id)
    return backup


def _restore_sqlite(backup: Path, live: Path) -> None:
    staged = live.with_name(live.name + ".restoring")
    shutil.copyfile(backup, staged)
    for suffix in ("-wal", "-shm"):
        live.with_name(live.name + suffix).unlink(missing_ok=True)
    os.replace(staged, live)


# --- on schedule ---------------------------------------------------------------------

STALE = "backup_stale"


async def nightly(db: Database, settings: Settings) -> Backup | None:
    """Take and verify a backup when the last is `LEVQOR_BACKUP_INTERVAL_S` old; alert
    while no verified backup is that recent (plus two hours' grace)."""
    now = utcnow()
    taken = None
    newest = next(iter(await listed(db, limit=1)), None)
    if newest is None or now - newest.created_at >= timedelta(seconds=settings.backup_interval_s):
        with contextlib.suppress(BackupFailed):  # alerted where it failed
            taken = await run(db, settings)
            await verify(db, settings, taken.id)
    await _alert_if_stale(db, settings, now)
    return taken


async def _alert_if_stale(db: Database, settings: Settings, now: datetime) -> None:
    async with db.session(write=True) as session, session.begin():
        good = await session.scalar(
            select(Backup.created_at)
            .where(Backup.verify_ok.is_(True))
            .order_by(Backup.created_at.desc())
            .limit(1)
        )
        limit = timedelta(seconds=settings.backup_interval_s) + STALE_GRACE
        if good is None or now - good > limit:
            when = f"since {good:%Y-%m-%d %H:%M} UTC" if good else "yet"
            await alerts.record(
                session,
                settings,
                "warning",
                "No recent verified backup",
                f"No backup has been verified {when}. See `levqor backup list`.",
                key=STALE,
            )
        else:
            await alerts.resolve(
                session,
                settings,
                STALE,
                "A verified backup is recent again",
                f"The newest verified backup was taken {good:%Y-%m-%d %H:%M} UTC.",
            )
    await alerts.deliver_due(db, settings)


async def newest_verified_age_s(session: AsyncSession) -> float | None:
    good = await session.scalar(
        select(Backup.created_at)
        .where(Backup.verify_ok.is_(True))
        .order_by(Backup.created_at.desc())
        .limit(1)
    )
    return None if good is None else (utcnow() - good).total_seconds()


def tick_task(db: Database, settings: Settings, *, every_s: float = 300) -> TickTask:
    async def take() -> object:
        return await nightly(db, settings)

    return at_most_every(every_s, take)
