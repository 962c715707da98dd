"""`levqor migrate` and `levqor keys rotate`."""

from __future__ import annotations

import asyncio

import typer
from cryptography.fernet import Fernet
from pydantic import SecretStr
from rich.console import Console
from rich.progress import Progress

from levqor.config import add_stored_key, load_settings, read_stored_secrets, stored_keys
from levqor.crypto import build_cipher
from levqor.db import migrate as migrations
from levqor.db import rotation
from levqor.db.engine import create_database

console = Console()


def migrate(
    revision: str = typer.Argument("head", help="Target revision."),
    down: bool = typer.Option(False, "--down", help="Downgrade to REVISION instead."),
) -> None:
    """Bring the database schema to a revision (default: the newest)."""
    settings = load_settings()
    if down:
        migrations.downgrade(settings, revision)
    else:
        migrations.upgrade(settings, revision)
    console.print(f"Database at {migrations.current_revision_sync(settings)}.")


keys_app = typer.Typer(help="The encryption key ring.", no_args_is_help=True)


@keys_app.command("rotate")
def rotate_keys(
    new_key: bool = typer.Option(
        None,
        "--new-key/--no-new-key",
        help="Add a fresh key first in the generated ring (the default when the ring is "
        "the generated one in the data directory).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Re-encrypt every stored secret under the ring's first key, while Levqor runs.

    With LEVQOR_ENCRYPTION_KEYS: put the new key first on every process (old keys after
    it), restart them, run this, then drop the old keys. With the generated ring: this
    adds the new key itself; running processes pick it up without a restart.
    """
    asyncio.run(_rotate(new_key, as_json))


async def _rotate(new_key: bool | None, as_json: bool) -> None:
    settings = load_settings()
    stored = read_stored_secrets(settings.data_dir)
    current = [key.get_secret_value() for key in settings.encryption_keys]
    generated = stored is not None and stored_keys(stored) == current
    if new_key or (new_key is None and generated):
        if not generated:
            raise typer.BadParameter("--new-key: the ring comes from LEVQOR_ENCRYPTION_KEYS")
        ring = add_stored_key(settings.data_dir, Fernet.generate_key().decode())
        settings = settings.model_copy(update={"encryption_keys": [SecretStr(k) for k in ring]})
    db = create_database(settings)
    try:
        total = await rotation.count_sealed(db)
        with Progress(console=console, transient=as_json) as bar:
            task = bar.add_task("Re-encrypting", total=total)
            rewritten = await rotation.rotate_all(
                db, build_cipher(settings), lambda done: bar.advance(task, done)
            )
    finally:
        await db.dispose()
    keys = len(settings.encryption_keys)
    if as_json:
        console.print_json(data={"rewritten": rewritten, "keys_in_ring": keys})
    else:
        console.print(f"Re-encrypted {rewritten} secrets under the first of {keys} keys.")
