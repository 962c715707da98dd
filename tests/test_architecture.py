"""The layering in docs/architecture.md holds: imports point down, no package cycles.

`make lint` checks the same contract with import-linter; these tests also prove the
contract bites (an upward import breaks it) and check what a layers contract cannot:
that no two packages import each other, foundation siblings included.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]


def contract() -> dict[str, Any]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    [layers] = [each for each in config["contracts"] if each["type"] == "layers"]
    return dict(layers)


def layers() -> list[grimp.Layer]:
    """The contract's layers as grimp reads them: `a | b` independent, `a : b` not."""
    parsed = []
    for line in contract()["layers"]:
        independent = "|" in line
        names = [name.strip() for name in line.replace(":", "|").split("|")]
        parsed.append(grimp.Layer(*names, independent=independent))
    return parsed


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    built = grimp.build_graph("levqor", exclude_type_checking_imports=True)
    # The contract's ignored imports: the schema registry that imports every models module.
    for module in list(built.find_modules_directly_imported_by("levqor.db.models")):
        if module.endswith(".models"):
            built.remove_import(importer="levqor.db.models", imported=module)
    return built


def upward_imports(graph: grimp.ImportGraph) -> list[str]:
    found = graph.find_illegal_dependencies_for_layers(layers=layers())
    return sorted(f"{each.importer} -> {each.imported}" for each in found)


def test_every_import_points_down_the_layers(graph: grimp.ImportGraph) -> None:
    assert upward_imports(graph) == []


def test_an_upward_import_breaks_the_contract(graph: grimp.ImportGraph) -> None:
    graph.add_import(importer="levqor.accounts.service", imported="levqor.billing.service")
    try:
        assert upward_imports(graph) == ["levqor.accounts -> levqor.billing"]
    finally:
        graph.remove_import(importer="levqor.accounts.service", imported="levqor.billing.service")


def test_no_two_packages_import_each_other(graph: grimp.ImportGraph) -> None:
    edges: dict[str, set[str]] = {}
    for module in graph.modules:
        if module.count(".") < 1:
            continue
        for imported in graph.find_modules_directly_imported_by(module) - {"levqor"}:
            here, there = module.split(".")[1], imported.split(".")[1]
            if here != there:
                edges.setdefault(here, set()).add(there)
    assert _cycles(edges) == []


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Groups of packages that reach each other (Tarjan's strongly connected parts)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while (member := stack.pop()) != node:
                group.append(member)
            if group:
                groups.append(sorted([node, *group]))

    for node in list(edges):
        if node not in index:
            visit(node)
    return groups


PROBE = """
import sys
sys.argv = ["levqor", "worker"]
from levqor import entry
entry._load()  # the command `levqor worker` runs, built but not run
from levqor.bootstrap import build_runtime  # what the worker builds at start
from levqor.jobs.worker import Worker
heavy = (
    "fastapi", "uvicorn", "levqor.cli", "levqor.app", "levqor.ops.backups", "rich", "click",
    "levqor.partners.service",  # its reactions load it at their first event, never a worker's
    "prometheus_client",  # loaded at the first count; a worker alone counts nothing
    "croniter", "levqor.jobs.scheduler",  # a schedule's fire times: the scheduler's
    "argon2", "levqor.compliance.service",  # at the first password, the first mail step
)
print("LOADED:" + ",".join(sorted(name for name in heavy if name in sys.modules)))
from levqor.accounts.models import User
print("MAPPERS CONFIGURED:", User.__mapper__.configured)
import rich.console  # hidden only while httpx and structlog loaded
print("RICH:", rich.console.Console.__name__)
"""


def test_a_worker_process_loads_neither_the_web_stack_nor_the_operator_commands() -> None:
    """Workers start by the dozen after a deploy: each import they skip is start-up saved.
    Nor do their modules configure SQLAlchemy's mappers as they load (30 to 40 ms): a
    worker's own statements name tables, not mapped classes, and never need them. Nor
    the console libraries that httpx and structlog load when installed (7% of its start)."""
    probe = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert probe.stdout.splitlines()[-3:] == [
        "LOADED:",
        "MAPPERS CONFIGURED: False",
        "RICH: Console",
    ]


APP_PROBE = """
import asyncio
import sys

from levqor.accounts.models import User
from levqor.app import create_app
from levqor.config import load_settings
from levqor.db import migrate

settings = load_settings(data_dir=sys.argv[1])
migrate.upgrade(settings)
print("BEFORE START:", User.__mapper__.configured)


async def start() -> None:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        print("STARTED:", User.__mapper__.configured)


asyncio.run(start())
"""


def test_the_api_configures_its_mappers_as_it_starts_not_on_its_first_request(
    tmp_path: Path,
) -> None:
    """Loading modules configures no mapper (see the worker's probe), so the API does it
    at start: else its first request would pay for it (30 to 40 ms), and what it builds
    would escape the start-up freeze of objects the garbage collector skips."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVQOR_")}
    probe = subprocess.run(
        [sys.executable, "-c", APP_PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=env,
    )
    lines = [line for line in probe.stdout.splitlines() if line.startswith(("BEFORE", "STARTED"))]
    assert lines == ["BEFORE START: False", "STARTED: True"]
