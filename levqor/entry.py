"""The `levqor` command's entry point.

`levqor worker` and `levqor scheduler` are started by the dozen (and each start is
counted in how fast a queue drains after a deploy), so they load only what they run:
not the web app, nor every operator command's package. Everything else goes through
the full command (`levqor.cli`).
"""

from __future__ import annotations

import sys

import typer  # the processes' command is built here, its annotations read here

PROCESSES = ("worker", "scheduler")


def main() -> None:
    if sys.argv[1:2] and sys.argv[1] in PROCESSES:
        _processes()
        return
    from levqor.cli import main as everything

    everything()


def _processes() -> None:
    from levqor import clikit
    from levqor.bootstrap import build_runtime
    from levqor.jobs import cli as jobs_cli
    from levqor.logging import configure_cli_logging
    from levqor.runtime import return_freed_memory

    app = typer.Typer(help="Levqor's long-running processes.", no_args_is_help=True)

    @app.callback()
    def _root(context: typer.Context) -> None:
        clikit.install(context, build_runtime)
        configure_cli_logging()

    app.command("worker")(jobs_cli.worker)
    app.command("scheduler")(jobs_cli.scheduler)
    return_freed_memory()
    app()
