"""Step templates: sandboxed Jinja2 over `input` and `steps.<id>.output`.

    render("Paid {{ input.amount }}", context)  -> "Paid 1200"
    render("{{ input.amount }}", context)       -> 1200   (a lone expression keeps its type)

The sandbox refuses attribute access to Python internals at run time; `check()` refuses
them when a workflow is saved, along with names other than the allowed roots, so a bad
template is a validation error, not a failed run. Output size is bounded, and so is
string repetition, which could otherwise build a huge value from a short template.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, Undefined, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from levqor import errors

ROOTS = frozenset({"input", "steps"})
MAX_OUTPUT_CHARS = 256 * 1024
LONE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}\s*$", re.DOTALL)


class TemplateFailed(errors.InvalidRequest):
    """A template could not be rendered."""

    code = "template_error"


class _Environment(SandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Data are JSON: `input.items` means the key "items", not dict.items.
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "**" and isinstance(right, int) and abs(right) > 1000:
            raise SecurityError("exponent too large")
        repeats = operator_name == "*" and isinstance(left, str | list) and isinstance(right, int)
        if repeats and len(left) * right > MAX_OUTPUT_CHARS:
            raise SecurityError("result too large")
        return operator.mul(left, right) if operator_name == "*" else operator.pow(left, right)


ENV = _Environment(undefined=StrictUndefined, autoescape=False)


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def problems(source: str) -> list[str]:
    """Why a template may not be saved; empty when it is fine."""
    try:
        tree = ENV.parse(source)
    except TemplateError as exc:
        return [f"template syntax error: {exc.message}"]
    found = [
        f"unknown name '{name}' (use {', '.join(sorted(ROOTS))})"
        for name in sorted(meta.find_undeclared_variables(tree) - ROOTS)
    ]
    keys = [node.attr for node in tree.find_all(nodes.Getattr)]
    keys += [
        node.arg.value for node in tree.find_all(nodes.Getitem) if isinstance(node.arg, nodes.Const)
    ]
    found += [f"access to '{key}' is not allowed" for key in keys if str(key).startswith("_")]
    return found


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every template string inside `value` (dicts and lists are walked)."""
    if isinstance(value, dict):
        return {key: render(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, context) for item in value]
    if not is_template(value):
        return value
    try:
        result = _render_string(value, context)
    except SecurityError as exc:
        raise TemplateFailed(f"template refused: {exc}") from exc
    except TemplateError as exc:
        raise TemplateFailed(f"template failed: {exc.message}") from exc
    if isinstance(result, str) and len(result) > MAX_OUTPUT_CHARS:
        raise TemplateFailed(f"template output exceeds {MAX_OUTPUT_CHARS} characters")
    return result


def _render_string(source: str, context: Mapping[str, Any]) -> Any:
    lone = LONE_EXPRESSION.match(source)
    if lone is None:
        return _template(source).render(**context)
    value = _expression(lone["expr"])(**context)
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()  # an undefined or refused name fails here, not later
    return value


# Compiling is most of a render's cost (Jinja's from_string does not cache), and a
# workflow's templates repeat run after run: compiled once per process.
@lru_cache(maxsize=1024)
def _template(source: str) -> Template:
    return ENV.from_string(source)


@lru_cache(maxsize=1024)
def _expression(source: str) -> Any:
    return ENV.compile_expression(source, undefined_to_none=False)


def truthy(condition: str, context: Mapping[str, Any]) -> bool:
    """Evaluate an `if`/`condition` template; rendered text "false", "0", "" are false."""
    return is_true(render(condition, context))


def is_true(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0", "no", "none", "null")
    return bool(value)
