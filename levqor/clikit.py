"""What every CLI command shares: its runtime, built from the environment's settings.

The `levqor` root command (`levqor.cli`) puts the runtime factory on the command's
context; a command anywhere below takes it from there (`open_runtime(context)`), so
domain packages never import the composition root above them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import typer

from levqor.config import Settings, load_settings
from levqor.runtime import Runtime

RuntimeFactory = Callable[[Settings], Runtime]


def install(context: typer.Context, factory: RuntimeFactory) -> None:
    context.obj = factory


@asynccontextmanager
async def open_runtime(
    context: typer.Context, settings: Settings | None = None
) -> AsyncIterator[Runtime]:
    """The command's runtime (from `settings`, by default the environment's), closed
    when the block ends."""
    factory: RuntimeFactory | None = context.find_root().obj
    if factory is None:
        raise RuntimeError("run this through the `levqor` command, which wires the runtime")
    runtime = factory(settings or load_settings())
    try:
        yield runtime
    finally:
        await runtime.close()
