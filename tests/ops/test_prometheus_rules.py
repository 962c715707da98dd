"""deploy/prometheus/alerts.yml: valid for promtool, its own rule tests pass, and every
metric it names is one Levqor exports."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from levqor.ops import backups
from levqor.runtime import Runtime

RULES = Path(__file__).parents[2] / "deploy" / "prometheus"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        reason = "promtool is missing: apt-get install prometheus (.ci/run does)"
        if os.environ.get("PROMTOOL_TESTS") == "required":  # CI: never skip silently
            pytest.fail(reason)
        pytest.skip(reason)
    return found


@pytest.mark.parametrize(
    "command", [["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]]
)
def test_promtool_accepts_the_rules(command: list[str]) -> None:
    done = subprocess.run(
        [promtool(), *command], cwd=RULES, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


async def test_every_metric_the_rules_name_is_exported(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await client.get("/health")  # so the HTTP series exist
    await backups.run(runtime.db, runtime.settings)  # and the verified backup's age
    await backups.verify(runtime.db, runtime.settings)
    exported = (await client.get("/metrics")).text
    named = set(re.findall(r"\b(levqor_[a-z_]+)", (RULES / "alerts.yml").read_text()))
    base = {re.sub(r"_(bucket|count|sum)$", "", name) for name in named}
    missing = {name for name in base if f"# TYPE {name} " not in exported}
    assert missing == set()
