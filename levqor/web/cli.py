"""`levqor seo submit`: announce changed public pages to search engines (IndexNow)."""

from __future__ import annotations

import asyncio
import json

import typer
from rich.console import Console

from levqor import clikit
from levqor.errors import LevqorError
from levqor.web import seo

seo_app = typer.Typer(help="Search engines: IndexNow.", no_args_is_help=True)
console = Console()


@seo_app.command("submit")
def submit(
    context: typer.Context,
    everything: bool = typer.Option(False, "--all", help="Every public page, changed or not."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Post the public URLs whose content changed since IndexNow last accepted them."""
    try:
        sent = asyncio.run(_submit(context, everything))
    except LevqorError as exc:
        console.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps({"submitted": sent.urls, "status": sent.status}))
    elif not sent.urls:
        console.print("Nothing changed since the last submission.")
    else:
        console.print(f"IndexNow accepted {len(sent.urls)} URL(s) ({sent.status}).")
        for url in sent.urls:
            console.print(f"  {url}")


async def _submit(context: typer.Context, everything: bool) -> seo.Submitted:
    async with clikit.open_runtime(context) as runtime:
        return await seo.submit(runtime.db, runtime.settings, everything=everything)
