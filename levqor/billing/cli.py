"""`levqor billing reconcile` (apply the Stripe events the webhook missed), `levqor
spend-guard` (today's LLM spend and the pauses the guard made; resume them)
and `levqor costs` (what running the business costs, and the users that cover it)."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from levqor import clikit
from levqor.accounts import service as accounts
from levqor.billing import reconcile, reports, spend_guard
from levqor.errors import LevqorError

billing_app = typer.Typer(help="Billing: Stripe reconciliation.", no_args_is_help=True)
spend_guard_app = typer.Typer(
    help="The LLM spend guard: today's spend, pauses, resuming.", no_args_is_help=True
)
console = Console()


@spend_guard_app.command("status")
def status(
    context: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print as JSON.")
) -> None:
    """Today's LLM spend (UTC), the biggest spenders, and the pauses in force."""
    report = asyncio.run(_status(context))
    if as_json:
        console.print_json(data=report)
        return
    console.print(
        f"Today: ${report['spent_micro_usd'] / 1e6:.2f} spent on LLM calls "
        f"(server limit: {_limit(report['server_limit_micro_usd'])}, per user: "
        f"{_limit(report['user_limit_micro_usd'])})."
    )
    table = Table("user", "spent today", "paused")
    for spender in report["spenders"]:
        table.add_row(
            spender["user_id"],
            f"${spender['spent_micro_usd'] / 1e6:.2f}",
            "yes" if spender["paused"] else "",
        )
    console.print(table)
    if report["server_paused"]:
        console.print("[red]LLM calls are paused for everyone until midnight UTC.[/red]")


@spend_guard_app.command("resume")
def resume(
    context: typer.Context,
    email: str | None = typer.Argument(None, help="The user to resume; leave out with --server."),
    server: bool = typer.Option(False, "--server", help="Lift the server-wide pause."),
) -> None:
    """Lift a pause before midnight: the user (or server) may spend one more day's limit."""
    if (email is None) == (not server):
        console.print("[red]Give a user's e-mail address, or --server.[/red]")
        raise typer.Exit(2)
    lifted = asyncio.run(_resume(context, email))
    if lifted is None:
        console.print(f"[red]No user with the address {email}.[/red]")
        raise typer.Exit(1)
    console.print("Resumed." if lifted else "Nothing was paused.")


def _limit(micro_usd: int) -> str:
    return f"${micro_usd / 1e6:.2f}" if micro_usd else "off"


async def _status(context: typer.Context) -> dict[str, Any]:
    async with clikit.open_runtime(context) as runtime:
        async with runtime.db.session(write=False) as session:
            total, spenders = await spend_guard.today(session)
            server_paused = await spend_guard.paused(session, user_id=None)
        return {
            "spent_micro_usd": total,
            "server_limit_micro_usd": runtime.settings.spend_guard_daily_micro_usd,
            "user_limit_micro_usd": runtime.settings.spend_guard_user_daily_micro_usd,
            "server_paused": server_paused,
            "spenders": [vars(spender) for spender in spenders],
        }


async def _resume(context: typer.Context, email: str | None) -> int | None:
    async with (
        clikit.open_runtime(context) as runtime,
        runtime.db.session(write=True) as session,
        session.begin(),
    ):
        user_id = None
        if email is not None:
            user = await accounts.find_by_email(session, kit=runtime.auth, email=email)
            if user is None:
                return None
            user_id = user.id
        return await spend_guard.resume(session, user_id=user_id, actor="system")


def costs(
    context: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print as JSON.")
) -> None:
    """Today's and this month's costs by source, and the paying users that cover them."""
    report = asyncio.run(_costs(context))
    if as_json:
        console.print_json(data=asdict(report))
        return
    table = Table("source", "today", "this month")
    for source in ("stripe", "llm", "infra", "total"):
        table.add_row(
            source,
            _money(getattr(report.today, f"{source}_cents"), report.currency),
            _money(getattr(report.this_month, f"{source}_cents"), report.currency),
        )
    console.print(table)
    if report.break_even_users is None:
        console.print("No plan has a price: nothing to break even with.")
    else:
        console.print(
            f"Break-even: {report.break_even_users} paying users at "
            f"{_money(report.arpu_cents, report.currency)} each a month."
        )
    for note in report.notes:
        console.print(f"[dim]{note}[/dim]")


def _money(cents: int, currency: str) -> str:
    return f"{cents / 100:,.2f} {currency.upper()}"


async def _costs(context: typer.Context) -> reports.Costs:
    async with clikit.open_runtime(context) as runtime, runtime.db.session(write=False) as session:
        return await reports.costs(session, settings=runtime.settings)


@billing_app.command("reconcile")
def reconcile_command(
    context: typer.Context,
    since: datetime | None = typer.Option(
        None,
        "--since",
        help="From when (ISO 8601, UTC if no zone); by default where the last run started.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Apply every Stripe event since then that the webhook missed (each counts once)."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    try:
        report = asyncio.run(_reconcile(context, since))
    except LevqorError as exc:
        console.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(1) from exc
    if as_json:
        console.print_json(
            data={"since": report.since.isoformat(), "seen": report.seen, "applied": report.applied}
        )
        return
    console.print(
        f"Stripe made {report.seen} events since {report.since:%Y-%m-%d %H:%M} UTC; "
        f"{len(report.applied)} were missing here and are applied now."
    )


async def _reconcile(context: typer.Context, since: datetime | None) -> reconcile.Reconciled:
    async with clikit.open_runtime(context) as runtime:
        return await reconcile.reconcile(
            runtime.db, runtime.stripe, runtime.settings, since=since, actor="cli"
        )
