"""`levqor alerts test|list` (the alert channels and their history) and `levqor slo`."""

from __future__ import annotations

import asyncio
import json
import secrets

import typer
from rich.console import Console
from rich.table import Table

from levqor import clikit
from levqor.ops import alerts, channels, slo
from levqor.ops.models import Alert, AlertDelivery

alerts_app = typer.Typer(help="Alerts: test the channels, read the history.", no_args_is_help=True)
console = Console()


@alerts_app.command("test")
def send_test(
    context: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")
) -> None:
    """Send one info alert through every configured channel; exit 1 if any failed."""
    outcomes = asyncio.run(_test(context))
    if as_json:
        typer.echo(json.dumps([vars(outcome) for outcome in outcomes]))
    elif not outcomes:
        console.print(
            "No alert channel is configured: set LEVQOR_ALERT_TELEGRAM_*, "
            "LEVQOR_ALERT_SLACK_WEBHOOK_URL, LEVQOR_ALERT_EMAIL_TO or LEVQOR_ALERT_WEBHOOK_URL."
        )
    else:
        table = Table("channel", "outcome", "error")
        for outcome in outcomes:
            colour = "green" if outcome.status == alerts.SENT else "red"
            table.add_row(
                outcome.channel, f"[{colour}]{outcome.status}[/{colour}]", outcome.error or ""
            )
        console.print(table)
    if not outcomes or any(outcome.status != alerts.SENT for outcome in outcomes):
        raise typer.Exit(1)


async def _test(context: typer.Context) -> list[alerts.Outcome]:
    async with clikit.open_runtime(context) as runtime:
        if not channels.configured(runtime.settings):
            return []
        async with runtime.db.session(write=True) as session, session.begin():
            recorded = await alerts.record(
                session,
                runtime.settings,
                "info",
                "Test alert",
                "Sent by `levqor alerts test`: this channel reaches you.",
                key=f"test:{secrets.token_hex(8)}",  # every test is sent
                once=True,
            )
        return await alerts.deliver_due(runtime.db, runtime.settings, alert_id=recorded.alert.id)


@alerts_app.command("list")
def history(
    context: typer.Context,
    limit: int = typer.Option(20, min=1, max=500, help="How many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The alert history, newest first, with each channel's outcome."""
    found = asyncio.run(_history(context, limit))
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "id": alert.id,
                        "severity": alert.severity,
                        "title": alert.title,
                        "created_at": alert.created_at.isoformat(),
                        "repeats": alert.repeats,
                        "channels": {d.channel: d.status for d in deliveries},
                    }
                    for alert, deliveries in found
                ]
            )
        )
        return
    table = Table("when (UTC)", "severity", "title", "repeats", "channels")
    for alert, deliveries in found:
        said = ", ".join(f"{d.channel}: {d.status}" for d in deliveries) or "none configured"
        table.add_row(
            f"{alert.created_at:%Y-%m-%d %H:%M}",
            alert.severity,
            alert.title,
            str(alert.repeats),
            said,
        )
    console.print(table)


async def _history(context: typer.Context, limit: int) -> list[tuple[Alert, list[AlertDelivery]]]:
    async with clikit.open_runtime(context) as runtime, runtime.db.read() as session:
        found, _ = await alerts.page(session, limit=limit)
        return found


def slo_command(
    context: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")
) -> None:
    """The API's p95 latency and 5xx share over the SLO window, against the SLO."""
    now = asyncio.run(_slo(context))
    if as_json:
        typer.echo(json.dumps({"status": now.status, **vars(now)}))
        return
    p95 = f"{now.p95_ms:.0f} ms" if now.p95_ms is not None else "no requests"
    table = Table("", "now", "SLO")
    table.add_row("p95 latency", p95, f"{now.target_p95_ms:.0f} ms")
    table.add_row("5xx share", f"{now.error_rate:.2%}", f"{now.target_error_rate:.2%}")
    table.add_row("requests", str(now.requests), f"in {now.window_s} s")
    console.print(table)
    colour = {"ok": "green", "breaching": "yellow", "breached": "red"}[now.status]
    console.print(
        f"[{colour}]{now.status}[/{colour}] ({now.breaches_in_a_row} breaching checks in a row)"
    )


async def _slo(context: typer.Context) -> slo.State:
    async with clikit.open_runtime(context) as runtime, runtime.db.read() as session:
        return await slo.state(session, runtime.settings)
