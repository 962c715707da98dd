"""Accounts commands: `levqor create-admin`, `levqor tokens prune`."""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import asdict

import typer
from rich.console import Console
from rich.table import Table

from levqor import clikit
from levqor.accounts import service, sessions
from levqor.accounts.models import ROLE_ADMIN
from levqor.config import Settings
from levqor.errors import LevqorError, NotFound
from levqor.idempotency import service as idempotency_service

console = Console()
tokens_app = typer.Typer(help="Token upkeep.", no_args_is_help=True)


def create_admin(
    context: typer.Context,
    email: str = typer.Option(..., prompt=True, help="The admin's e-mail address."),
    password: str = typer.Option(
        None, help="Leave out to generate one (printed once).", show_default=False
    ),
    name: str = typer.Option("Admin", help="Display name."),
) -> None:
    """Create a user with the admin role."""
    generated = password is None
    chosen = password or secrets.token_urlsafe(18)
    try:
        asyncio.run(_create_admin(context, email, chosen, name))
    except LevqorError as exc:
        console.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"Admin [bold]{email}[/bold] created.")
    if generated:
        console.print(f"Password (shown once): [bold]{chosen}[/bold]")


async def _create_admin(context: typer.Context, email: str, password: str, name: str) -> None:
    async with (
        clikit.open_runtime(context) as runtime,
        runtime.db.write() as session,
        session.begin(),
    ):
        await service.create(
            session,
            kit=runtime.auth,
            email=email,
            password=password,
            name=name,
            role=ROLE_ADMIN,
        )


async def ensure_first_admin(
    context: typer.Context, email: str, settings: Settings | None = None
) -> str | None:
    """On a first start, create an admin and return its password; None if one exists."""
    async with (
        clikit.open_runtime(context, settings) as runtime,
        runtime.db.write() as session,
        session.begin(),
    ):
        if await service.has_admin(session):
            return None
        password = secrets.token_urlsafe(18)
        await service.create(
            session,
            kit=runtime.auth,
            email=email,
            password=password,
            name="Admin",
            role=ROLE_ADMIN,
        )
        return password


@tokens_app.command("prune")
def prune(
    context: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")
) -> None:
    """Delete expired refresh tokens, old revocations, login failures and idempotency keys."""
    counts = asyncio.run(_prune(context))
    if as_json:
        typer.echo(json.dumps(counts))
        return
    table = Table("what", "deleted")
    for what, count in counts.items():
        table.add_row(what, str(count))
    console.print(table)


async def _prune(context: typer.Context) -> dict[str, int]:
    async with (
        clikit.open_runtime(context) as runtime,
        runtime.db.write() as session,
        session.begin(),
    ):
        report = await sessions.prune_expired(session, kit=runtime.auth)
        idempotency = await idempotency_service.prune(session)
    return {**asdict(report), "idempotency_keys": idempotency}


def set_role(
    context: typer.Context,
    email: str = typer.Argument(..., help="The user's e-mail address."),
    role: str = typer.Argument(..., help="user or admin"),
) -> None:
    """Make a user an admin, or an admin a plain user (recorded in the audit log)."""
    try:
        changed = asyncio.run(_set_role(context, email, role))
    except LevqorError as exc:
        console.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"{email} is now {role}." if changed else f"{email} was {role} already.")


async def _set_role(context: typer.Context, email: str, role: str) -> bool:
    async with (
        clikit.open_runtime(context) as runtime,
        runtime.db.write() as session,
        session.begin(),
    ):
        user = await service.find_by_email(session, kit=runtime.auth, email=email)
        if user is None:
            raise NotFound(f"No user with the address {email}.")
        return await service.set_role(session, user=user, role=role, actor="system")
