"""Definition checks: every problem named by its field path."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from levqor.workflows.definition import InvalidDefinition, WorkflowDefinition, check


def definition(*steps: dict[str, Any], **extra: Any) -> WorkflowDefinition:
    return WorkflowDefinition.model_validate({"name": "w", "steps": list(steps), **extra})


def problems(value: WorkflowDefinition) -> dict[str, str]:
    with pytest.raises(InvalidDefinition) as caught:
        check(value)
    return {item["field"]: item["message"] for item in caught.value.extra["errors"]}


def test_a_valid_definition_passes() -> None:
    check(
        definition(
            {"id": "fetch", "connector": "http_request", "params": {"url": "{{ input.url }}"}},
            {"id": "shape", "connector": "transform", "params": {"x": "{{ steps.fetch.output }}"}},
            {"id": "only_big", "connector": "filter", "params": {"condition": "{{ 1 > 0 }}"}},
            {"id": "pause", "connector": "delay", "action": "wait", "params": {"seconds": 5}},
        )
    )


def test_duplicate_step_ids() -> None:
    found = problems(
        definition(
            {"id": "a", "connector": "transform", "params": {}},
            {"id": "a", "connector": "transform", "params": {}},
        )
    )
    assert found == {"definition.steps[1].id": "duplicate step id 'a'"}


def test_unknown_connector_and_action() -> None:
    found = problems(
        definition(
            {"id": "a", "connector": "fax", "params": {}},
            {"id": "b", "connector": "http_request", "action": "teleport", "params": {"url": "x"}},
        )
    )
    assert "unknown connector 'fax'" in found["definition.steps[0].connector"]
    assert "no action 'teleport'" in found["definition.steps[1].connector"]


def test_params_are_checked_against_the_action() -> None:
    found = problems(
        definition(
            {"id": "a", "connector": "http_request", "params": {"method": "BREW", "extra": 1}},
            {"id": "b", "connector": "delay", "params": {"seconds": -1}},
        )
    )
    assert set(found) == {
        "definition.steps[0].params.url",
        "definition.steps[0].params.method",
        "definition.steps[0].params.extra",
        "definition.steps[1].params.seconds",
    }


def test_template_values_are_typed_at_run_time_not_save_time() -> None:
    check(
        definition(
            {
                "id": "a",
                "connector": "http_request",
                "params": {"url": "{{ input.url }}", "timeout": "{{ input.timeout }}"},
            },
        )
    )


def test_unsafe_templates_in_params_and_if() -> None:
    found = problems(
        definition(
            {
                "id": "a",
                "connector": "transform",
                "if": "{{ input.__dict__ }}",
                "params": {"deep": {"x": ["{{ ''.__class__ }}"]}},
            },
        )
    )
    assert found == {
        "definition.steps[0].params.deep.x[0]": "access to '__class__' is not allowed",
        "definition.steps[0].if": "access to '__dict__' is not allowed",
    }


@pytest.mark.parametrize(
    ("trigger", "message"),
    [
        ({"type": "schedule"}, "needs 'cron'"),
        ({"type": "schedule", "cron": "every monday"}, "not a cron expression of five fields"),
        ({"type": "schedule", "cron": "* * * * * *"}, "not a cron expression of five fields"),
        ({"type": "schedule", "cron": "0 0 30 2 *"}, "never fires"),
        ({"type": "schedule", "cron": "0 0 31 4,6 *"}, "never fires"),
        ({"type": "schedule", "cron": "@reboot"}, "not a cron alias"),
        (
            {"type": "schedule", "cron": "0 9 * * 1", "timezone": "Mars/Olympus"},
            "unknown time zone",
        ),
        ({"type": "manual", "cron": "0 9 * * 1"}, "only for schedule"),
    ],
)
def test_trigger_problems(trigger: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        definition({"id": "a", "connector": "transform", "params": {}}, trigger=trigger)


@pytest.mark.parametrize("cron", ["0 9 * * 1", "*/5 * * * *", "0 0 29 2 *", "@daily", "0 0 L * *"])
def test_schedules_that_fire_are_accepted(cron: str) -> None:
    trigger = {"type": "schedule", "cron": cron}
    assert definition({"id": "a", "connector": "transform"}, trigger=trigger).trigger.cron == cron


@pytest.mark.parametrize("step_id", ["Has-Dash", "1starts_with_digit", "", "x" * 65])
def test_step_ids_must_be_template_names(step_id: str) -> None:
    with pytest.raises(ValidationError):
        definition({"id": step_id, "connector": "transform", "params": {}})


def test_stored_form_keeps_the_if_key() -> None:
    value = definition({"id": "a", "connector": "transform", "if": "{{ true }}", "params": {}})
    assert value.dump()["steps"][0]["if"] == "{{ true }}"
