"""The planner as the API uses it: a user's words -> a draft, on the LLM server when one
is configured and the spend guard lets the user spend (the call's cost recorded), else
on the rules. Apart from `workflows.service` so that a worker, which runs saved versions
and never plans, does not load the planners and their LLM client."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from levqor.accounts.models import User
from levqor.billing import spend_guard
from levqor.config import Settings
from levqor.connectors import llm
from levqor.workflows import planner
from levqor.workflows.planner.plans import Plan


async def plan(
    session: AsyncSession,
    *,
    settings: Settings,
    user: User,
    prompt: str,
    answers: Mapping[str, str] | None = None,
) -> Plan:
    """Plain words -> a validated draft (not saved): the LLM planner when one is
    configured and the spend guard lets the user spend (its cost recorded), else the
    rules. `answers` fill in the details a draft asks for (its `inputs`, by name)."""
    server = llm.server_from_settings(settings)
    if server is not None and await spend_guard.active_pause(session, user_id=user.id):
        server = None
    drafted = await planner.plan(prompt, server)
    if drafted.usage:
        await spend_guard.record_usage(
            session, settings=settings, user_id=user.id, purpose="plan", usage=drafted.usage
        )
    return planner.answer(drafted, answers or {})
