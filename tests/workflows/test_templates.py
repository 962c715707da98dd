"""Template rendering: what a step's params become, and what is refused."""

from __future__ import annotations

from typing import Any

import pytest

from levqor.workflows.templates import TemplateFailed, problems, render, truthy

CONTEXT: dict[str, Any] = {
    "input": {"amount": 1200, "email": "ada@example.com", "items": [1, 2, 3]},
    "steps": {"lookup": {"output": {"status": 200, "body": {"id": "cus_1"}}}},
}


def test_strings_are_rendered_and_structure_kept() -> None:
    params = {
        "text": "Paid {{ input.amount }} by {{ input.email }}",
        "nested": {"id": "{{ steps.lookup.output.body.id }}"},
        "list": ["{{ input.items | length }}", "plain"],
        "number": 5,
    }
    assert render(params, CONTEXT) == {
        "text": "Paid 1200 by ada@example.com",
        "nested": {"id": "cus_1"},
        "list": [3, "plain"],
        "number": 5,
    }


def test_a_lone_expression_keeps_its_type() -> None:
    assert render("{{ input.amount }}", CONTEXT) == 1200
    assert render("{{ input.items }}", CONTEXT) == [1, 2, 3]
    assert render(" {{ input.amount > 1000 }} ", CONTEXT) is True


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("{{ input.amount > 1000 }}", True),
        ("{{ input.amount > 5000 }}", False),
        ("{% if input.amount %}yes{% endif %}", True),
        ("{{ '' }}", False),
        ("false", False),
    ],
)
def test_conditions(condition: str, expected: bool) -> None:
    assert truthy(condition, CONTEXT) is expected


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__ }}",
        "{{ input.__class__.__mro__ }}",
        "x {{ ''.__class__ }} y",
        "{{ input['__class__'] }}",
    ],
)
def test_python_internals_are_refused_when_rendering(template: str) -> None:
    with pytest.raises(TemplateFailed, match=r"refused|failed"):
        render(template, CONTEXT)


@pytest.mark.parametrize(
    "template", ["{{ ''.__class__ }}", "{{ input['__globals__'] }}", "{{ steps._private }}"]
)
def test_python_internals_are_refused_when_saving(template: str) -> None:
    assert any("not allowed" in problem for problem in problems(template))


def test_unknown_names_are_refused_when_saving() -> None:
    assert problems("{{ secrets.key }}") == ["unknown name 'secrets' (use input, steps)"]
    assert problems("{% for item in input.items %}{{ item }}{% endfor %}") == []


def test_syntax_errors_are_refused_when_saving() -> None:
    assert problems("{{ input. }}")[0].startswith("template syntax error")


def test_undefined_name_fails_clearly() -> None:
    with pytest.raises(TemplateFailed, match="has no attribute 'missing'"):
        render("{{ input.missing }}", CONTEXT)


@pytest.mark.parametrize(
    "template", ["{{ 'x' * 10000000 }}", "{{ [1] * 10000000 }}", "{{ 9 ** 99999 }}"]
)
def test_huge_results_are_refused(template: str) -> None:
    with pytest.raises(TemplateFailed, match="too large"):
        render(template, CONTEXT)


def test_output_size_is_bounded() -> None:
    big = {"input": {"blob": "x" * 200_000}, "steps": {}}
    with pytest.raises(TemplateFailed, match="exceeds"):
        render("{{ input.blob }}{{ input.blob }}", big)
