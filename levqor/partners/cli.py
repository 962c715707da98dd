"""`levqor payouts run`: pay every partner whose approved commission reaches the minimum."""

from __future__ import annotations

import asyncio
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from levqor import clikit
from levqor.audit.models import AuditEntry
from levqor.errors import LevqorError
from levqor.partners import fraud, service
from levqor.partners.models import Payout

payouts_app = typer.Typer(help="Partner payouts.", no_args_is_help=True)
partners_app = typer.Typer(help="The partner program.", no_args_is_help=True)
console = Console()


@payouts_app.command("run")
def run(
    context: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the payouts as JSON."),
) -> None:
    """Send the payouts that are due (Stripe transfers); exit 1 if any failed."""
    try:
        done = asyncio.run(_run(context))
    except LevqorError as exc:
        console.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(1) from exc
    if as_json:
        console.print_json(
            data=[
                {
                    "id": payout.id,
                    "partner_id": payout.partner_id,
                    "amount_cents": payout.amount_cents,
                    "currency": payout.currency,
                    "status": payout.status,
                    "failure": payout.failure,
                }
                for payout in done
            ]
        )
    else:
        _print_table(done)
    if any(payout.status == "failed" for payout in done):
        raise typer.Exit(1)


def _print_table(done: list[Payout]) -> None:
    if not done:
        console.print("No partner is owed the minimum payout.")
        return
    table = Table("payout", "partner", "amount", "status", "failure")
    for payout in done:
        amount = f"{payout.amount_cents / 100:.2f} {payout.currency.upper()}"
        table.add_row(payout.id, payout.partner_id, amount, payout.status, payout.failure or "")
    console.print(table)


async def _run(context: typer.Context) -> list[Payout]:
    async with clikit.open_runtime(context) as runtime:
        return await service.run_payouts(runtime, actor="system")


@partners_app.command("fraud-log")
def fraud_log(
    context: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the decisions as JSON."),
) -> None:
    """Every fraud-guard decision (flagged, approved, rejected) with its signals."""
    entries = asyncio.run(_decisions(context))
    rows: list[dict[str, Any]] = [
        {
            "at": entry.at.isoformat(),
            "decision": entry.action.removeprefix("referral_"),
            "by": entry.actor,
            "referral": entry.object_id,
            "partner_id": entry.detail.get("partner_id"),
            "score": entry.detail.get("score"),
            "signals": entry.detail.get("signals") or [],
        }
        for entry in entries
    ]
    if as_json:
        console.print_json(data=rows)
        return
    if not rows:
        console.print("No referral has been flagged.")
        return
    table = Table("at", "decision", "by", "referral", "partner", "score", "signals")
    for row in rows:
        signals = ", ".join(f"{s['name']} ({s['weight']})" for s in row["signals"])
        table.add_row(
            row["at"][:19],
            row["decision"],
            row["by"],
            str(row["referral"]),
            str(row["partner_id"]),
            str(row["score"]),
            signals,
        )
    console.print(table)


async def _decisions(context: typer.Context) -> list[AuditEntry]:
    async with clikit.open_runtime(context) as runtime, runtime.db.read() as session:
        return await fraud.decisions(session)
