"""A plan (a validated draft) and the rules planner's entry point."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from levqor import errors
from levqor.workflows.definition import WorkflowDefinition, check
from levqor.workflows.planner import rules


class NotUnderstood(errors.InvalidRequest):
    """Nothing in the request could be turned into a step."""

    status = 422
    code = "plan_not_understood"


@dataclass
class Plan:
    definition: dict[str, Any]
    planner: str
    notes: list[str] = field(default_factory=list)
    not_understood: list[str] = field(default_factory=list)
    usage: dict[str, Any] | None = None


def validated(definition: dict[str, Any]) -> dict[str, Any]:
    """The definition as `POST /workflows` would store it, or InvalidDefinition."""
    model = WorkflowDefinition.model_validate(definition)
    check(model)
    return model.dump()


def plan_with_rules(prompt: str) -> Plan:
    draft = rules.draft_workflow(prompt)
    if not draft.steps:
        unread = "; ".join(draft.not_understood) or prompt
        raise NotUnderstood(
            f"No step could be read from this request: {unread}. Name what should happen, "
            "e.g. 'post to Slack #sales' or 'email me at me@example.com'."
        )
    definition = {"name": _name(prompt), "trigger": draft.trigger, "steps": draft.steps}
    return Plan(
        definition=validated(definition),
        planner="rules",
        notes=list(dict.fromkeys(draft.notes)),
        not_understood=draft.not_understood,
    )


def _name(prompt: str) -> str:
    words = " ".join(prompt.split())
    name = words if len(words) <= 60 else words[:59].rsplit(" ", 1)[0] + "…"
    return name[:1].upper() + name[1:]
