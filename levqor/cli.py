"""The `levqor` command: Typer root; each domain adds its own sub-commands."""

from __future__ import annotations

import asyncio
import functools
import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from levqor import __version__, clikit
from levqor.accounts import cli as accounts_cli
from levqor.billing import cli as billing_cli
from levqor.bootstrap import build_runtime
from levqor.compliance import cli as compliance_cli
from levqor.config import Settings, load_settings, share_metrics_between_processes
from levqor.db import cli as db_cli
from levqor.db import migrate as migrations
from levqor.jobs import cli as jobs_cli
from levqor.logging import configure_cli_logging, configure_logging
from levqor.ops import cli as ops_cli
from levqor.partners import cli as partners_cli
from levqor.runtime import return_freed_memory
from levqor.web import cli as web_cli

app = typer.Typer(help="Levqor: self-hosted workflow automation.", no_args_is_help=True)
app.command("migrate")(db_cli.migrate)
app.add_typer(db_cli.keys_app, name="keys")
app.add_typer(compliance_cli.audit_app, name="audit")
app.add_typer(compliance_cli.users_app, name="users")
compliance_cli.users_app.command("role")(accounts_cli.set_role)
app.command("create-admin")(accounts_cli.create_admin)
app.add_typer(accounts_cli.tokens_app, name="tokens")
app.command("worker")(jobs_cli.worker)
app.command("scheduler")(jobs_cli.scheduler)
app.add_typer(jobs_cli.jobs_app, name="jobs")
app.add_typer(jobs_cli.health_app, name="health")
app.add_typer(partners_cli.payouts_app, name="payouts")
app.add_typer(partners_cli.partners_app, name="partners")
app.add_typer(billing_cli.spend_guard_app, name="spend-guard")
app.add_typer(billing_cli.billing_app, name="billing")
app.command("costs")(billing_cli.costs)
app.add_typer(web_cli.seo_app, name="seo")
app.add_typer(ops_cli.alerts_app, name="alerts")
app.command("slo")(ops_cli.slo_command)
app.command("verify")(ops_cli.verify_command)
app.command("anomalies")(ops_cli.anomalies_command)
app.add_typer(ops_cli.rollback_app, name="rollback")
app.command("report")(ops_cli.report_command)
app.add_typer(ops_cli.backup_app, name="backup")
app.add_typer(web_cli.social_app, name="social")
console = Console()


@app.callback()
def _root(
    context: typer.Context,
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    clikit.install(context, build_runtime)
    configure_cli_logging()
    if version:
        typer.echo(__version__)
        raise typer.Exit()


@app.command()
def up(
    context: typer.Context,
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    data_dir: Path = typer.Option(None, help="Where data lives (LEVQOR_DATA_DIR)."),
    admin_email: str = typer.Option("admin@example.com", help="E-mail of the first admin."),
) -> None:
    """Everything in one process on the embedded SQLite default: migrate, then serve."""
    settings = _up_settings(host, port, data_dir)
    configure_logging(settings.log_level, json=settings.log_json)
    # Runs finish in the worker processes: their counters reach /metrics through files.
    settings = share_metrics_between_processes(settings, port)
    migrations.upgrade(settings)
    password = asyncio.run(accounts_cli.ensure_first_admin(context, admin_email, settings))
    url = f"http://{_shown(host)}:{port}"
    say = functools.partial(console.print, soft_wrap=True)  # a log file gets whole lines
    say(f"\n[bold green]Levqor {__version__}[/bold green] is starting at [bold]{url}[/]")
    say(f"  data: {settings.data_dir.resolve()}   API docs: {url}/docs")
    say(f"  public address (webhook links): {settings.public_url}")
    if password:
        say("  First start: an admin account was created. Log in with")
        say(f"    e-mail    [bold]{admin_email}[/bold]")
        say(f"    password  [bold]{password}[/bold]   (shown this once; keep it)")
        say(
            f"  e.g.  curl -X POST {url}/api/v1/auth/login -H 'content-type: "
            f'application/json\' -d \'{{"email":"{admin_email}","password":"…"}}\''
        )
    else:
        say("  Log in with your admin account (`levqor create-admin` makes another).")
    import uvicorn  # the web stack is imported by the commands that serve it, not by all

    from levqor.app import create_app

    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        access_log=False,
        log_level="warning",
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )


def _up_settings(host: str, port: int, data_dir: Path | None) -> Settings:
    """`up`'s settings: one process runs the API, a worker and the scheduler; unless
    LEVQOR_PUBLIC_URL says otherwise, links point at the address it listens on."""
    overrides: dict[str, Any] = {"embedded_jobs": True}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    settings = load_settings(**overrides)
    if "public_url" not in settings.model_fields_set:
        reachable = "127.0.0.1" if host in ("0.0.0.0", "::") else _shown(host)  # noqa: S104
        settings = settings.model_copy(update={"public_url": f"http://{reachable}:{port}"})
    return settings


def _shown(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@app.command()
def serve(
    host: str = typer.Option(
        "127.0.0.1", help="Address to listen on (0.0.0.0 for every interface)."
    ),
    port: int = typer.Option(8000, help="Port to listen on."),
    workers: int = typer.Option(os.cpu_count() or 2, help="API processes."),
) -> None:
    """The API alone, for production: several processes behind one port."""
    from levqor import serve as server

    settings = load_settings()  # generates missing secrets once, before the workers start
    configure_logging(settings.log_level, json=settings.log_json)
    console.print(
        f"[bold green]Levqor {__version__}[/bold green] API on [bold]http://{_shown(host)}:{port}[/]"
        f" ({workers} process{'es' if workers != 1 else ''}; public address "
        f"{settings.public_url}; database {'SQLite' if settings.is_sqlite else 'PostgreSQL'})"
    )
    if settings.metrics_token is None and host not in ("127.0.0.1", "::1", "localhost"):
        console.print("  /metrics answers this machine only: set LEVQOR_METRICS_TOKEN for others.")
    if workers == 1:
        server.run_worker(host, port, settings.forwarded_allow_ips)
        return
    metrics_dir = share_metrics_between_processes(settings, port).prometheus_multiproc_dir
    if server.serve(host, port, workers, settings.forwarded_allow_ips, metrics_dir) != 0:
        console.print("[red]The API could not start; see the log above.[/red]")
        raise typer.Exit(1)


def main() -> None:
    return_freed_memory()
    app()
