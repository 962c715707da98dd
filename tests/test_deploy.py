"""deploy/: the compose file and systemd units start the processes the suites test."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from levqor.cli import app

DEPLOY = Path(__file__).parent.parent / "deploy"
runner = CliRunner()


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def test_compose_runs_every_part_with_a_health_check() -> None:
    services = compose()["services"]
    assert {"postgres", "redis", "migrate", "serve", "worker", "scheduler"} <= set(services)
    assert services["serve"]["deploy"]["replicas"] == 2
    assert services["scheduler"]["deploy"]["replicas"] == 2
    for name in ("postgres", "redis", "serve", "worker", "scheduler"):
        assert "healthcheck" in services[name], name


def levqor_commands() -> list[list[str]]:
    commands = [
        service["command"][1:]
        for service in compose()["services"].values()
        if service.get("command", [None])[0] == "levqor"
    ]
    for unit in (DEPLOY / "systemd").glob("*.service"):
        for line in re.findall(r"^Exec\w+=/opt/levqor/bin/levqor (.+)$", unit.read_text(), re.M):
            commands.append(shlex.split(line))
    for service in compose()["services"].values():
        test = service.get("healthcheck", {}).get("test", [])
        if test[1:2] == ["levqor"]:
            commands.append(test[2:])
    return commands


@pytest.mark.parametrize("command", levqor_commands(), ids=" ".join)
def test_every_deployed_command_exists_with_its_options(command: list[str]) -> None:
    """Each command line parses (an unknown option or verb would fail here, not at 3 am)."""
    verbs = [part for part in command if not part.startswith("-")]
    options = [part for part in command if part.startswith("--")]
    shown = runner.invoke(app, [*verbs[: 2 if verbs[0] == "health" else 1], "--help"])
    assert shown.exit_code == 0, shown.output
    for option in options:
        assert option in shown.output, f"{option} is not an option of {command}"
