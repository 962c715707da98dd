"""What will fail when a workflow runs, said when it is saved: a step whose connector needs
a credential and names none (or one that is not the owner's), and a literal address the
SSRF guard will refuse. Warnings, not errors: the workflow is saved either way, but the
owner learns now instead of from a failed run that cost a credit.

No DNS lookup here (an address can change before the run; the run-time guard decides):
only literal IP addresses and `localhost` are judged.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from levqor.accounts.models import User
from levqor.config import Settings
from levqor.connectors import registry, safety
from levqor.connectors import service as connectors
from levqor.workflows.definition import WorkflowDefinition

URL_PARAMS = ("url",)
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain"})


async def warnings(
    session: AsyncSession, *, user: User, definition: dict[str, Any], settings: Settings
) -> dict[str, list[str]]:
    """Step id -> what will go wrong with it at run time (steps with none are left out)."""
    parsed = WorkflowDefinition.model_validate(definition)
    owned, _ = await connectors.list_for_user(session, user_id=user.id, limit=1000)
    mine = {credential.id: credential.connector for credential in owned}
    allow = safety.AllowList.parse(settings.allow_private_urls)
    found: dict[str, list[str]] = {}
    for step in parsed.steps:
        said = _credential_warnings(step.connector, step.credential, mine)
        said += [
            _refused(value, allow) for name, value in step.params.items() if name in URL_PARAMS
        ]
        said = [each for each in said if each]
        if said:
            found[step.id] = said
    return found


def _credential_warnings(connector: str, credential: str | None, mine: dict[str, str]) -> list[str]:
    needs = registry.get(connector).credential_fields
    if credential is None:
        if needs:
            return [f"needs a credential ({' or '.join(needs)}): add one and name it here"]
        return []
    if credential not in mine:
        return [f"the credential {credential} does not exist, or is not yours"]
    if mine[credential] != connector:
        return [f"the credential {credential} is for {mine[credential]}, not {connector}"]
    return []


def _refused(value: Any, allow: safety.AllowList) -> str:
    """Why the guard will refuse a literal URL, or "" (templates are judged at run time)."""
    if not isinstance(value, str) or "{{" in value or "{%" in value:
        return ""
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL:
        return f"{value} is not a valid URL"
    if url.scheme not in ("http", "https"):
        return f"only http and https addresses can be called: {value}"
    host = url.host.lower()
    try:
        address = ipaddress.ip_address("127.0.0.1" if host in LOCAL_NAMES else host)
    except ValueError:
        return ""  # a name: resolved and judged at run time
    if safety.is_public(address) or allow.allows(host, address):
        return ""
    return (
        f"{host} is a private or internal address: the run will refuse it "
        "(the operator can allow it with LEVQOR_ALLOW_PRIVATE_URLS)"
    )
