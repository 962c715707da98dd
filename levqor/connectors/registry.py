"""The connector registry: name -> Connector. Adding a connector is adding a module."""

from __future__ import annotations

from levqor import errors
from levqor.connectors import (
    airtable,
    builtin,
    discord,
    email,
    github,
    google_sheets,
    llm,
    notion,
    slack,
    stripe,
    telegram,
    webhook,
)
from levqor.connectors.base import Action, Connector


class UnknownAction(errors.InvalidRequest):
    """No such connector or action."""

    code = "unknown_action"


CONNECTORS: dict[str, Connector] = {
    connector.name: connector
    for connector in (
        *builtin.CONNECTORS,
        airtable.CONNECTOR,
        discord.CONNECTOR,
        email.CONNECTOR,
        github.CONNECTOR,
        google_sheets.CONNECTOR,
        llm.CONNECTOR,
        notion.CONNECTOR,
        slack.CONNECTOR,
        stripe.CONNECTOR,
        telegram.CONNECTOR,
        webhook.CONNECTOR,
    )
}


def get(connector: str) -> Connector:
    found = CONNECTORS.get(connector)
    if found is None:
        raise UnknownAction(f"unknown connector '{connector}'")
    return found


def resolve(connector: str, action: str | None) -> Action:
    found = CONNECTORS.get(connector)
    if found is None:
        known = ", ".join(sorted(CONNECTORS))
        raise UnknownAction(f"unknown connector '{connector}' (known: {known})")
    if action is None:
        if found.single_action is None:
            raise UnknownAction(f"connector '{connector}' has several actions: name one")
        return found.single_action
    if action not in found.actions:
        known = ", ".join(sorted(found.actions))
        raise UnknownAction(f"connector '{connector}' has no action '{action}' (known: {known})")
    return found.actions[action]
