"""`levqor seo submit` (IndexNow) and `levqor social …` (posts through Buffer)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import typer
from rich.console import Console

from levqor import clikit
from levqor.errors import LevqorError
from levqor.web import seo, social
from levqor.web.models import SocialPost

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


social_app = typer.Typer(help="Social posts through Buffer.", no_args_is_help=True)


@social_app.command("connect")
def connect(
    context: typer.Context,
    channel: str = typer.Option(..., help="The Buffer channel id to post to."),
    token: str = typer.Option(
        ..., prompt=True, hide_input=True, help="A Buffer API key (stored encrypted)."
    ),
) -> None:
    """Set the Buffer channel and API key that `levqor social post` uses."""
    asyncio.run(_connect(context, channel, token))
    console.print(f"Connected: posts go to Buffer channel {channel}.")


@social_app.command("post")
def post(
    context: typer.Context,
    text: str = typer.Argument(..., help="What to post."),
    at: datetime = typer.Option(
        None, "--at", help="When to publish (UTC unless a zone is given); default: Buffer's queue."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Queue a post and hand it to Buffer now; if Buffer is away, the scheduler retries."""
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    try:
        sent = asyncio.run(_post(context, text, at))
    except LevqorError as exc:
        console.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps({"id": sent.id, "status": sent.status, "error": sent.error}))
    elif sent.status == "sent":
        console.print(f"Buffer has it ({sent.buffer_post_id}).")
    else:
        console.print(f"[yellow]{sent.status}: {sent.error}[/yellow]")
    if sent.status == "failed":
        raise typer.Exit(1)


async def _connect(context: typer.Context, channel: str, token: str) -> None:
    async with clikit.open_runtime(context) as runtime:
        await social.connect(runtime.db, runtime.cipher, channel_id=channel, token=token)


async def _post(context: typer.Context, text: str, at: datetime | None) -> SocialPost:
    async with clikit.open_runtime(context) as runtime:
        queued = await social.queue(runtime.db, text=text, due_at=at)
        tried = await social.send_queued(runtime.db, runtime.settings, runtime.cipher)
        return next(each for each in tried if each.id == queued.id)
