"""Step templates: sandboxed Jinja2 over `input` and `steps.<id>.output`.

    render("Paid {{ input.amount }}", context)  -> "Paid 1200"
    render("{{ input.amount }}", context)       -> 1200   (a lone expression keeps its type)

The sandbox refuses attribute access to Python internals at run time; `check()` refuses
them when a workflow is saved, along with names other than the allowed roots, so a bad
template is a validation error, not a failed run.

A template is a user's program, so every render is bounded while it runs, not after:
loop iterations are counted against a budget and a deadline (each `for` loop's iterable
is wrapped by the parser), text output is streamed and stops at the size cap, and `*`,
`**` refuse results too large before computing them. What cannot be bounded from inside
Python (a C-level operation holding the interpreter, memory grown by other means) is
bounded from outside: `is_plain()` tells the templates whose cost is linear in their
inputs, rendered in process; the rest render in `levqor.workflows.sandbox`, a child
process with a memory limit that is killed at its deadline.
"""

from __future__ import annotations

import contextvars
import operator
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, Undefined, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from levqor import errors, jsonvalues

ROOTS = frozenset({"input", "steps"})
MAX_OUTPUT_CHARS = 256 * 1024
MAX_SOURCE_CHARS = 64 * 1024
MAX_ITERATIONS = 100_000  # loop iterations in one render, all loops together
MAX_INT_BITS = 4096  # about 1,233 decimal digits
LONE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}\s*$", re.DOTALL)
GUARD_FILTER = "levqor_counted"

# A plain template costs time linear in its source and the values it names: lookups,
# constants, comparisons, boolean logic, concatenation and these filters. Everything else
# (loops, macros, calls, `*`, `**`, `%`, other filters) renders in the sandbox process.
PLAIN_NODES = (
    nodes.Template,
    nodes.Output,
    nodes.TemplateData,
    nodes.Name,
    nodes.Const,
    nodes.Getattr,
    nodes.Getitem,
    nodes.Slice,
    nodes.Compare,
    nodes.Operand,
    nodes.And,
    nodes.Or,
    nodes.Not,
    nodes.Neg,
    nodes.Pos,
    nodes.Add,
    nodes.Sub,
    nodes.Concat,
    nodes.CondExpr,
    nodes.If,
    nodes.Test,
    nodes.Filter,
    nodes.List,
    nodes.Tuple,
    nodes.Dict,
    nodes.Pair,
    nodes.Keyword,
)
PLAIN_FILTERS = frozenset(
    {
        "default", "d", "lower", "upper", "title", "capitalize", "trim", "string", "int",
        "float", "abs", "round", "length", "count", "first", "last", "tojson", "e", "escape",
        "bool", "safe", "striptags", "urlencode", "list",
    }
)  # fmt: skip
MAX_PLAIN_SOURCE_CHARS = 2000
MAX_PLAIN_NAMES = 16


class TemplateFailed(errors.InvalidRequest):
    """A template could not be rendered."""

    code = "template_error"


@dataclass
class Budget:
    """What one render may still spend."""

    iterations: int = MAX_ITERATIONS
    timeout_s: float | None = None
    deadline: float = float("inf")  # time.monotonic()

    def __post_init__(self) -> None:
        if self.timeout_s is not None:
            self.deadline = time.monotonic() + self.timeout_s

    def spend(self) -> None:
        self.iterations -= 1
        if self.iterations < 0:
            raise SecurityError(f"more than {MAX_ITERATIONS} loop iterations")
        if time.monotonic() > self.deadline:
            raise SecurityError(f"rendering took longer than {self.timeout_s:g} s")


_budget: contextvars.ContextVar[Budget] = contextvars.ContextVar("template_budget")


def _counted(iterable: Iterable[Any]) -> Iterator[Any]:
    budget = _budget.get(None) or Budget()
    for item in iterable:
        budget.spend()
        yield item


class _Environment(SandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Data are JSON: `input.items` means the key "items", not dict.items.
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "**":
            _check_power(left, right)
            return operator.pow(left, right)
        _check_product(left, right)
        return operator.mul(left, right)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):  # every loop spends the render's budget
            loop.iter = nodes.Filter(loop.iter, GUARD_FILTER, [], [], None, None)
        return tree


def _check_power(base: Any, exponent: Any) -> None:
    if not (isinstance(base, int) and isinstance(exponent, int)):
        return  # floats overflow into an error, not into memory
    if abs(base) > 1 and exponent > 0 and abs(base).bit_length() * exponent > MAX_INT_BITS:
        raise SecurityError(f"result too large (over {MAX_INT_BITS} bits)")


def _check_product(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS:
            raise SecurityError(f"result too large (over {MAX_INT_BITS} bits)")
        return
    for sequence, times in ((left, right), (right, left)):
        repeats = isinstance(sequence, str | list | tuple) and isinstance(times, int)
        if repeats and len(sequence) * times > MAX_OUTPUT_CHARS:
            raise SecurityError("result too large")


ENV = _Environment(undefined=StrictUndefined, autoescape=False)
ENV.filters[GUARD_FILTER] = _counted


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def problems(source: str) -> list[str]:
    """Why a template may not be saved; empty when it is fine."""
    if len(source) > MAX_SOURCE_CHARS:
        return [f"a template may have at most {MAX_SOURCE_CHARS} characters"]
    try:
        tree = ENV.parse(source)
    except TemplateError as exc:
        return [f"template syntax error: {exc.message}"]
    except RecursionError:
        return ["the template is nested too deeply"]
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


@lru_cache(maxsize=4096)
def is_plain(source: str) -> bool:
    """Whether `source` renders in time and memory linear in its size and the values it
    names, so it may render in process; False sends it to the sandbox process."""
    if len(source) > MAX_PLAIN_SOURCE_CHARS:
        return False
    try:
        tree = ENV.parse(source)
    except (TemplateError, RecursionError):
        return True  # fails fast when rendered, with its syntax error
    names = 0
    for node in _walk(tree):
        if not isinstance(node, PLAIN_NODES):
            return False
        if isinstance(node, nodes.Filter) and node.name not in PLAIN_FILTERS:
            return False
        names += isinstance(node, nodes.Name)
    return names <= MAX_PLAIN_NAMES


def all_plain(value: Any) -> bool:
    """Whether every template inside `value` (dicts and lists walked) is plain."""
    if isinstance(value, dict):
        return all(all_plain(item) for item in value.values())
    if isinstance(value, list):
        return all(all_plain(item) for item in value)
    return not is_template(value) or is_plain(value)


def _walk(node: nodes.Node) -> Iterator[nodes.Node]:
    yield node
    for child in node.iter_child_nodes():
        yield from _walk(child)


def render(value: Any, context: Mapping[str, Any], *, timeout_s: float | None = None) -> Any:
    """Render every template string inside `value` (dicts and lists are walked), all of
    them within one budget of loop iterations and, when given, of time."""
    budget = Budget(timeout_s=timeout_s)
    token = _budget.set(budget)
    try:
        return _render_value(value, context)
    finally:
        _budget.reset(token)


def _render_value(value: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(value, dict):
        return {key: _render_value(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [_render_value(item, context) for item in value]
    if not is_template(value):
        return value
    try:
        return _render_string(value, context)
    except SecurityError as exc:
        raise TemplateFailed(f"template refused: {exc}") from exc
    except TemplateError as exc:
        raise TemplateFailed(f"template failed: {exc.message}") from exc
    except RecursionError as exc:
        raise TemplateFailed("template failed: nested too deeply") from exc
    except MemoryError:
        raise  # the sandbox process reports it; in process, it is not ours to hide
    except Exception as exc:  # a user's arithmetic: 1/0, a float overflow, a bad type
        raise TemplateFailed(f"template failed: {exc}") from exc


def _render_string(source: str, context: Mapping[str, Any]) -> Any:
    if len(source) > MAX_SOURCE_CHARS:
        raise SecurityError(f"a template may have at most {MAX_SOURCE_CHARS} characters")
    lone = LONE_EXPRESSION.match(source)
    if lone is None:
        return _bounded_text(_template(source).generate(**context))
    value = _expression(lone["expr"])(**context)
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()  # an undefined or refused name fails here, not later
    if isinstance(value, str) and len(value) > MAX_OUTPUT_CHARS:
        raise SecurityError(f"template output exceeds {MAX_OUTPUT_CHARS} characters")
    return value


def _bounded_text(chunks: Iterator[str]) -> str:
    """Join the output as it is produced, stopping at the cap instead of after it."""
    parts: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_OUTPUT_CHARS:
            raise SecurityError(f"template output exceeds {MAX_OUTPUT_CHARS} characters")
        parts.append(chunk)
    return "".join(parts)


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


is_true = jsonvalues.is_true
