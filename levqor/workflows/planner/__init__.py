"""Plain words -> a workflow draft. Two planners behind one interface:

- `llm` when `LEVQOR_LLM_BASE_URL` names an OpenAI-compatible server: it is sent the
  connector catalogue and the definition's JSON Schema, answers JSON, and is sent the
  validation errors back for up to two repairs;
- `rules` otherwise (and when the model cannot produce a valid workflow): offline and
  deterministic, see `rules`.

Either way the answer validates with the same model and checks as `POST /workflows`; it
is a draft, not saved.
"""

from __future__ import annotations

from typing import Any

import httpx

from levqor.connectors.errors import ConnectorError
from levqor.workflows.planner.llm import ModelFailed, plan_with_llm
from levqor.workflows.planner.plans import (
    NotUnderstood,
    Plan,
    answer,
    plan_with_rules,
    validated,
)
from levqor.workflows.planner.rules import Needed

__all__ = ["Needed", "NotUnderstood", "Plan", "answer", "plan", "plan_with_rules", "validated"]


async def plan(prompt: str, server: Any) -> Plan:
    """The LLM planner when a server is configured, else (or when it fails) the rules."""
    if server is None:
        return plan_with_rules(prompt)
    async with httpx.AsyncClient() as client:
        try:
            return await plan_with_llm(prompt, server, client=client)
        except ModelFailed as exc:
            reason, usage = exc.detail, exc.usage
        except ConnectorError as exc:
            reason, usage = exc.message, None
    fallback = plan_with_rules(prompt)
    fallback.usage = usage
    fallback.notes.insert(0, f"The AI planner could not help ({reason}); this is the rules draft.")
    return fallback
