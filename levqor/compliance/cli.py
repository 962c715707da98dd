"""`levqor audit verify`: prove the audit log's hash chain unbroken."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console

from levqor.compliance import audit
from levqor.config import load_settings
from levqor.db.engine import create_database

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
