"""A plan (a validated draft), the rules planner's entry point, and answers to the
details a draft asks for."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from levqor import errors
from levqor.workflows.definition import WorkflowDefinition, check
from levqor.workflows.planner import rules
from levqor.workflows.planner.rules import Needed

PLACEHOLDER = re.compile(r"\{\{\s*input\.(?P<name>[a-z_][a-z0-9_]*)\s*\}\}")


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
    inputs: list[Needed] = field(default_factory=list)  # details still to be given


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
        inputs=draft.inputs,
    )


def answer(plan: Plan, answers: Mapping[str, str]) -> Plan:
    """The plan with the details it asked for filled in from `answers` (by input name).

    Blank answers leave the input open; an answer no input asked for is said in the notes.
    The result is validated again, so a wrong answer (an address that is not one) is an
    InvalidDefinition naming the step's field.
    """
    given = {name: value.strip() for name, value in answers.items() if value.strip()}
    wanted = {needed.name: needed for needed in plan.inputs}
    notes = plan.notes + [
        f"The answer '{name}' matches no detail this draft asks for."
        for name in sorted(given.keys() - wanted.keys())
    ]
    filled = {
        name: _normalised(wanted[name].param, value)
        for name, value in given.items()
        if name in wanted
    }
    if not filled:
        return replace(plan, notes=notes)
    return replace(
        plan,
        definition=validated(_substituted(plan.definition, filled)),
        notes=notes,
        inputs=[needed for needed in plan.inputs if needed.name not in filled],
    )


def asked_for(definition: dict[str, Any]) -> list[Needed]:
    """The details a model's draft left open the way its prompt says: a param whose whole
    value is `{{ input.<step id>_<param> }}`."""
    asked = []
    for step in definition["steps"]:
        for param, value in step.get("params", {}).items():
            name = f"{step['id']}_{param}"
            found = PLACEHOLDER.fullmatch(value.strip()) if isinstance(value, str) else None
            if found and found["name"] == name:
                question = f"What should '{param}' of the step '{step['id']}' be?"
                asked.append(
                    Needed(name, step["id"], param, question, "The request does not say.", "")
                )
    return asked


def _normalised(param: str, value: str) -> Any:
    """What a person pastes -> the value the step takes (a link -> its id)."""
    patterns = {
        "spreadsheet_id": r"spreadsheets/d/([\w-]+)",
        "database_id": r"([0-9a-f]{32})(?:[?#/]|$)",
        "base_id": r"\b(app\w{6,})\b",
    }
    if param in patterns:
        found = re.search(patterns[param], value)
        return found.group(1) if found else value
    if param == "chat_id" and value.lstrip("-").isdigit():
        return int(value)
    return value


def _substituted(value: Any, filled: Mapping[str, Any]) -> Any:
    """`value` with each placeholder of an answered input replaced by its answer."""
    if isinstance(value, str):
        found = PLACEHOLDER.fullmatch(value.strip())
        return filled.get(found["name"], value) if found else value
    if isinstance(value, list):
        return [_substituted(item, filled) for item in value]
    if isinstance(value, dict):
        return {key: _substituted(item, filled) for key, item in value.items()}
    return value


def _name(prompt: str) -> str:
    words = " ".join(prompt.split())
    name = words if len(words) <= 60 else words[:59].rsplit(" ", 1)[0] + "…"
    return name[:1].upper() + name[1:]
