"""`levqor audit verify` (prove the audit log's hash chain unbroken) and `levqor users
export|delete` (answer a data request that came by e-mail)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncSession

from levqor import clikit
from levqor.accounts import service as accounts
from levqor.accounts.kit import AuthKit
from levqor.accounts.models import User
from levqor.audit import service as audit
from levqor.compliance import privacy
from levqor.config import load_settings
from levqor.db.engine import create_database
from levqor.errors import LevqorError

audit_app = typer.Typer(help="The audit log.", no_args_is_help=True)
console = Console()


@audit_app.command("verify")
def verify(as_json: bool = typer.Option(False, "--json", help="Print the result as JSON.")) -> None:
    """Check every row's hash and link; exit 1 naming the first row that was changed."""
    verdict = asyncio.run(_verify())
    if as_json:
        console.print_json(
            data={
                "intact": verdict.intact,
                "checked": verdict.checked,
                "first_bad_id": verdict.first_bad_id,
                "reason": verdict.reason,
            }
        )
    elif verdict.intact:
        console.print(f"Audit log intact: {verdict.checked} entries checked.")
    else:
        console.print(
            f"[red]Audit log broken at entry {verdict.first_bad_id}[/red]: {verdict.reason} "
            f"({verdict.checked} entries before it check out)."
        )
    if not verdict.intact:
        raise typer.Exit(1)


async def _verify() -> audit.Verdict:
    db = create_database(load_settings())
    try:
        async with db.session(write=False) as session:
            return await audit.verify(session)
    finally:
        await db.dispose()


users_app = typer.Typer(
    help="Answer data requests about one user; change a role.", no_args_is_help=True
)


@users_app.command("export")
def export_user(
    context: typer.Context,
    email: str = typer.Argument(..., help="The user's e-mail address."),
    output: Path | None = typer.Option(None, help="Write the JSON here instead of stdout."),
) -> None:
    """Everything about a user, as GET /api/v1/me/export gives it (an Art. 15 request)."""
    document = asyncio.run(_export(context, email))
    text = json.dumps(document, indent=2, default=str)
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text)
        output.chmod(0o600)
        console.print(f"Wrote {output} ({len(text)} bytes).")


@users_app.command("delete")
def delete_user(
    context: typer.Context,
    email: str = typer.Argument(..., help="The user's e-mail address."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
) -> None:
    """Erase a user and everything personal about them, for good (an Art. 17 request)."""
    if not yes:
        typer.confirm(f"Erase {email} and all their data?", abort=True)
    try:
        tombstone = asyncio.run(_erase(context, email))
    except LevqorError as exc:  # Stripe could not cancel the subscription: nothing erased
        console.print(f"[red]{exc.detail} Nothing was erased.[/red]")
        raise typer.Exit(1) from exc
    console.print(f"Erased. Receipt in the audit log: {tombstone}.")


async def _export(context: typer.Context, email: str) -> dict[str, Any]:
    async with (
        clikit.open_runtime(context) as runtime,
        runtime.db.session(write=True) as session,
        session.begin(),
    ):
        user = await _user(session, email, runtime.auth)
        return await privacy.export(session, user=user, actor="system")


async def _erase(context: typer.Context, email: str) -> str:
    async with clikit.open_runtime(context) as runtime:
        async with runtime.db.session(write=False) as session:
            user = await _user(session, email, runtime.auth)
        return await privacy.erase_account(runtime, user_id=user.id, password=None)


async def _user(session: AsyncSession, email: str, kit: AuthKit) -> User:
    user = await accounts.find_by_email(session, kit=kit, email=email)
    if user is None:
        console.print(f"[red]No user with the address {email}.[/red]")
        raise typer.Exit(1)
    return user
