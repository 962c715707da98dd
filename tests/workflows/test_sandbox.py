"""Templates that loop, call or multiply render in child processes bounded in memory and
time; a bomb costs its owner a failed step and the server nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from levqor.workflows import templates
from levqor.workflows.sandbox import SandboxPool
from levqor.workflows.templates import TemplateFailed

CONTEXT: dict[str, Any] = {"input": {"items": [1, 2, 3], "name": "Ada"}, "steps": {}}
# Costs about half a second of one C call (no loop iteration to stop it at).
SLOW = "{{ (range(100000) | list | string) | wordwrap(1) | length }}"


@pytest.fixture
async def pool() -> AsyncIterator[SandboxPool]:
    built = SandboxPool(size=2, memory_mb=128, timeout_s=10)
    yield built
    built.close()


async def test_a_looping_template_renders_in_the_sandbox(pool: SandboxPool) -> None:
    template = "{% for item in input.items %}{{ item * 2 }},{% endfor %}"
    assert not templates.is_plain(template)
    assert await pool.render({"text": template}, CONTEXT, user_id="u", timeout_s=5) == {
        "text": "2,4,6,"
    }


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
         "more than 100000 loop iterations"),
        ("{{ 9 ** (9 ** 9) }}", "too large"),
        ("{% set ns = namespace(x=9) %}{% for i in range(60) %}{% set ns.x = ns.x * ns.x %}"
         "{% endfor %}{{ ns.x }}", "too large"),
        ("{{ 'a' * 1000000000 }}", "too large"),
        ("{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}"
         "{% endfor %}{{ ns.s | length }}", "out of memory"),
        ("{{ '%0999999999d' % 1 }}", "out of memory"),
        ("{% for i in range(10000) %}{{ 'x' * 100 }}{% endfor %}", "exceeds 262144 characters"),
    ],
)  # fmt: skip
async def test_bombs_fail_with_a_reason_and_the_pool_lives_on(
    pool: SandboxPool, template: str, reason: str
) -> None:
    with pytest.raises(TemplateFailed, match=reason):
        await pool.render({"bomb": template}, CONTEXT, user_id="u", timeout_s=10)
    after = await pool.render(["{{ range(3) | list }}"], CONTEXT, user_id="u", timeout_s=5)
    assert after == [[0, 1, 2]]


async def test_a_render_past_its_time_is_killed(pool: SandboxPool) -> None:
    with pytest.raises(TemplateFailed, match=r"took longer than 0\.05 s"):
        await pool.render(SLOW, CONTEXT, user_id="u", timeout_s=0.05)
    assert await pool.render("{{ 2 * 21 }}", CONTEXT, user_id="u", timeout_s=5) == 42


async def test_results_come_back_storable(pool: SandboxPool) -> None:
    assert await pool.render("{{ 2 ** 100 }}", CONTEXT, user_id="u", timeout_s=5) == str(2**100)
    assert await pool.render("{{ (1, 2) }}", CONTEXT, user_id="u", timeout_s=5) == [1, 2]


async def test_one_user_cannot_hold_every_sandbox(pool: SandboxPool) -> None:
    finished: list[str] = []

    async def render(user: str, template: str, name: str) -> None:
        await pool.render(template, CONTEXT, user_id=user, timeout_s=10)
        finished.append(name)

    hostile = [asyncio.create_task(render("a", SLOW, f"a{n}")) for n in range(2)]
    await asyncio.sleep(0)  # both of a's renders ask first
    await render("b", "{{ range(3) | list }}", "b")
    await asyncio.gather(*hostile)
    assert finished == ["b", "a0", "a1"]


@pytest.mark.parametrize(
    ("template", "plain"),
    [
        ("Paid {{ input.amount }} by {{ input.email | lower }}", True),
        ("{{ input.amount > 1000 and steps.a.output.ok }}", True),
        ("{% if input.vip %}VIP{% else %}{{ input.name | default('friend') }}{% endif %}", True),
        ("{{ input.a * 2 }}", False),
        ("{{ input.a ** 2 }}", False),
        ("{% for x in input.items %}{{ x }}{% endfor %}", False),
        ("{{ range(5) | list }}", False),
        ("{{ input.items | join(',') }}", False),
        ("{{ '%s' % input.a }}", False),
    ],
)
def test_what_renders_in_process(template: str, plain: bool) -> None:
    assert templates.is_plain(template) is plain


def test_a_deeply_nested_template_is_refused_when_saving() -> None:
    assert templates.problems("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}") == [
        "the template is nested too deeply"
    ]
    huge = "{{ input.a }}" + "x" * templates.MAX_SOURCE_CHARS
    assert templates.problems(huge) == ["a template may have at most 65536 characters"]


def test_a_users_arithmetic_error_is_a_template_error() -> None:
    with pytest.raises(TemplateFailed, match="division by zero"):
        templates.render("{{ 1 / 0 }}", CONTEXT)
