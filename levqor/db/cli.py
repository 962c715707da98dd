"""`levqor migrate`."""

from __future__ import annotations

import typer
from rich.console import Console

from levqor.config import load_settings
from levqor.db import migrate as migrations

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
