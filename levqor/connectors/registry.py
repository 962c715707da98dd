"""The connector registry: name -> Connector, found by scanning this package, so adding a
connector is adding a module (and its tests), nothing else."""

from __future__ import annotations

import importlib
import pkgutil

import levqor.connectors
from levqor import errors
from levqor.connectors.base import Action, Connector

# The package's own machinery, not connectors: not imported here (a worker has no use
# for the API routes, and importing them costs its start-up a web framework).
MACHINERY = {"api", "base", "errors", "models", "netio", "registry", "safety", "schemas", "service"}


def _discover() -> dict[str, Connector]:
    """Every module of this package that declares `CONNECTOR` (or `CONNECTORS`)."""
    found: dict[str, Connector] = {}
    for module_info in sorted(pkgutil.iter_modules(levqor.connectors.__path__)):
        if module_info.name in MACHINERY:
            continue
        module = importlib.import_module(f"levqor.connectors.{module_info.name}")
        declared = getattr(module, "CONNECTORS", ())
        single = getattr(module, "CONNECTOR", None)
        for connector in (*declared, *([single] if single else [])):
            if not isinstance(connector, Connector):
                continue
            if connector.name in found:
                raise RuntimeError(f"two connectors are named '{connector.name}'")
            found[connector.name] = connector
    return found


class UnknownAction(errors.InvalidRequest):
    """No such connector or action."""

    code = "unknown_action"


CONNECTORS: dict[str, Connector] = _discover()


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
