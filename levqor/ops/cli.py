"""`levqor alerts test|list`, `levqor slo`, `levqor backup run|list|verify|restore`."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from levqor import clikit
from levqor.errors import LevqorError
from levqor.ops import alerts, anomalies, backups, channels, reports, rollback, slo
from levqor.ops import verify as verification
from levqor.ops.models import Alert, AlertDelivery, Anomaly, Backup

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


backup_app = typer.Typer(help="Backups: take, list, verify, restore.", no_args_is_help=True)


@backup_app.command("run")
def backup_run(
    context: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")
) -> None:
    """Take a backup (SQLite online backup, or pg_dump) with its manifest; print its id."""
    with console.status("Taking a backup…"):
        taken = asyncio.run(_with_runtime(context, lambda rt: backups.run(rt.db, rt.settings)))
    if as_json:
        typer.echo(json.dumps(_backup_json(taken)))
    else:
        console.print(f"{taken.id}  {taken.size_bytes / 1e6:.1f} MB in {taken.took_s:.1f} s")


@backup_app.command("list")
def backup_list(
    context: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")
) -> None:
    """Backups, newest first, with their size and last verification."""
    found = asyncio.run(_with_runtime(context, lambda rt: backups.listed(rt.db)))
    if as_json:
        typer.echo(json.dumps([_backup_json(backup) for backup in found]))
        return
    table = Table("id", "taken (UTC)", "size", "status", "verified")
    for backup in found:
        checked = "never"
        if backup.verified_at is not None:
            word = (
                "[green]ok[/green]"
                if backup.verify_ok
                else f"[red]failed[/red]: {backup.verify_error}"
            )
            checked = f"{word} {backup.verified_at:%Y-%m-%d %H:%M}"
        table.add_row(
            backup.id,
            f"{backup.created_at:%Y-%m-%d %H:%M}",
            f"{backup.size_bytes / 1e6:.1f} MB",
            backup.status if backup.status == "ok" else f"[red]{backup.error}[/red]",
            checked,
        )
    console.print(table)


@backup_app.command("verify")
def backup_verify(
    context: typer.Context,
    backup_id: str = typer.Argument(None, help="The backup (default: the newest)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Re-check every checksum, restore into a scratch database, compare row counts and
    decrypt a sample; exit 1 naming what failed."""
    with console.status("Verifying…"):
        outcome = asyncio.run(
            _with_runtime(context, lambda rt: backups.verify(rt.db, rt.settings, backup_id))
        )
    if as_json:
        typer.echo(json.dumps(vars(outcome)))
    elif outcome.ok:
        console.print(
            f"[green]{outcome.backup_id} is good[/green] (checked in {outcome.took_s:.1f} s)"
        )
    else:
        console.print(f"[red]{outcome.backup_id} failed:[/red]")
        for problem in outcome.problems:
            console.print(f"  {problem}")
    if not outcome.ok:
        raise typer.Exit(1)


@backup_app.command("restore")
def backup_restore(
    context: typer.Context,
    backup_id: str = typer.Argument(..., help="The backup to put back."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask."),
) -> None:
    """Replace the live database (and generated keys) with a backup. On SQLite, stop
    Levqor first."""
    if not yes:
        typer.confirm(
            f"Replace the live database with backup {backup_id}? Everything written since "
            "it was taken is lost",
            abort=True,
        )
    with console.status("Restoring…"):
        asyncio.run(
            _with_runtime(context, lambda rt: backups.restore(rt.db, rt.settings, backup_id))
        )
    console.print(f"[green]Restored {backup_id}.[/green] Start Levqor again.")


async def _with_runtime(context: typer.Context, action: Any) -> Any:
    async with clikit.open_runtime(context) as runtime:
        try:
            return await action(runtime)
        except LevqorError as exc:
            console.print(f"[red]{exc.detail}[/red]")
            raise typer.Exit(1) from exc


def _backup_json(backup: Backup) -> dict[str, Any]:
    return {
        "id": backup.id,
        "created_at": backup.created_at.isoformat(),
        "backend": backup.backend,
        "status": backup.status,
        "error": backup.error,
        "size_bytes": backup.size_bytes,
        "took_s": backup.took_s,
        "offsite": backup.offsite,
        "verified_at": backup.verified_at.isoformat() if backup.verified_at else None,
        "verify_ok": backup.verify_ok,
        "verify_error": backup.verify_error,
    }


def verify_command(
    context: typer.Context,
    url: str = typer.Option(None, help="The running API (default: LEVQOR_PUBLIC_URL)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Check every part of a running installation; a pass/fail table, exit 1 on any failure."""
    found = asyncio.run(_verify(context, url))
    if as_json:
        typer.echo(json.dumps([vars(check) for check in found]))
    else:
        table = Table("check", "result", "found")
        for check in found:
            verdict = "[green]pass[/green]" if check.ok else "[red]FAIL[/red]"
            table.add_row(check.name, verdict, check.detail)
        console.print(table)
    if not all(check.ok for check in found):
        raise typer.Exit(1)


async def _verify(context: typer.Context, url: str | None) -> list[verification.Check]:
    async with clikit.open_runtime(context) as runtime:
        return await verification.run_checks(runtime, url)


def anomalies_command(
    context: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")
) -> None:
    """Look for anomalies in the last hours now (the scheduler does hourly); list the
    latest found, newest first."""
    found = asyncio.run(_anomalies(context))
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "series": each.series,
                        "hour": each.hour.isoformat(),
                        "value": each.value,
                        "expected": [each.expected_low, each.expected_high],
                        "score": each.score,
                        "method": each.method,
                    }
                    for each in found
                ]
            )
        )
        return
    if not found:
        console.print("No anomaly found.")
        return
    table = Table("hour (UTC)", "series", "value", "expected", "score")
    for each in found:
        table.add_row(
            f"{each.hour:%Y-%m-%d %H:00}",
            each.series,
            f"{each.value:g}",
            f"{each.expected_low:g} to {each.expected_high:g}",
            f"{each.score:g} ({each.method})",
        )
    console.print(table)


async def _anomalies(context: typer.Context) -> list[Anomaly]:
    async with clikit.open_runtime(context) as runtime:
        await anomalies.record(runtime.db, runtime.settings)
        async with runtime.db.read() as session:
            found, _ = await anomalies.page(session, limit=50)
            return found


rollback_app = typer.Typer(help="Put an earlier version back.", no_args_is_help=True)


@rollback_app.command("workflow")
def rollback_workflow(
    context: typer.Context,
    workflow_id: str = typer.Argument(..., help="The workflow (wf_…)."),
    to: int = typer.Option(None, "--to", help="The version (default: the one before)."),
) -> None:
    """Make an earlier version of a workflow current again, audited and alerted."""
    done = asyncio.run(_rollback(context, workflow_id, to))
    console.print(
        f"{done.workflow_id}: version {done.to_version} is current again (was {done.from_version})."
    )


async def _rollback(context: typer.Context, workflow_id: str, to: int | None) -> Any:
    async with clikit.open_runtime(context) as runtime:
        try:
            async with runtime.db.session(write=True) as session, session.begin():
                done = await rollback.by_hand(session, runtime.settings, workflow_id, to)
        except LevqorError as exc:
            console.print(f"[red]{exc.detail}[/red]")
            raise typer.Exit(1) from exc
        await alerts.deliver_due(runtime.db, runtime.settings)
        return done


def report_command(
    context: typer.Context,
    period: str = typer.Argument(..., help="daily, weekly or monthly"),
    send: bool = typer.Option(False, "--send", help="Also send it through the alert channels."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Uptime, p95, runs and failures, money by source, signups and paying users."""
    if period not in reports.DAYS:
        console.print("[red]The period is daily, weekly or monthly.[/red]")
        raise typer.Exit(2)
    built = asyncio.run(_report(context, period, send))
    typer.echo(json.dumps(built.as_json()) if as_json else reports.as_text(built))


async def _report(context: typer.Context, period: Any, send: bool) -> reports.Report:
    async with clikit.open_runtime(context) as runtime:
        async with runtime.db.read() as session:
            built = await reports.build(session, runtime.settings, period)
        if send:
            await reports.send(runtime.db, runtime.settings, built)
        return built
