"""The `levqor` command's entry point.

`levqor worker` and `levqor scheduler` are started by the dozen (and each start is
counted in how fast a queue drains after a deploy), so they load only what they run:
not the web app, nor every operator command's package. Everything else goes through
the full command (`levqor.cli`).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable

import typer  # the processes' command is built here, its annotations read here

PROCESSES = ("worker", "scheduler")
CONSOLE_LIBRARIES = ("click", "pygments", "rich")


def main() -> None:
    gc.disable()
    try:
        command = _load()
    finally:
        _keep_loaded_objects()
    command()


def _load() -> Callable[[], None]:
    if sys.argv[1:2] and sys.argv[1] in PROCESSES:
        return _process_command()
    from levqor.cli import main as everything

    return everything


def _keep_loaded_objects() -> None:
    """Loading the modules builds about 200,000 objects that live as long as the process.
    With the cycle collector on, its passes over them while they pile up took 7% of a
    worker's start (70 ms) and freed next to nothing (1,200 objects); frozen, later
    collections skip them too. The collector runs as usual from here on."""
    gc.freeze()
    gc.enable()


def _process_command() -> Callable[[], None]:
    _load_libraries_without_their_consoles()
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
    return app


def _load_libraries_without_their_consoles() -> None:
    """httpx loads its command-line client when click, pygments and rich are installed
    (typer brings them), and structlog loads rich for tracebacks in colour. A worker uses
    neither (Levqor's logs render exceptions as text before any renderer sees them), yet
    they were 7% of its start's instructions: so the two load first, with those hidden, and
    carry on without them, as they do where they are not installed. A command that prints
    tables (any other) loads rich as usual."""
    hidden = [name for name in CONSOLE_LIBRARIES if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # `import rich` fails while so
    try:
        import httpx  # noqa: F401
        import structlog  # noqa: F401
    finally:
        for name in hidden:
            if sys.modules.get(name, ...) is None:
                del sys.modules[name]
