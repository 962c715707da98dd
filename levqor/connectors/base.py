"""What a connector declares: its actions and each action's parameter schema.

A connector is one module that builds a `Connector` and registers it (see `registry`).
The engine validates a step's params against `Action.params` when a workflow is saved
(template strings are checked after rendering, at run time) and serves
`Action.params.model_json_schema()` in the catalogue. At run time it calls
`run(action, params, credential, context)`, which returns JSON output or raises one of
`connectors.errors`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict

from levqor.connectors.errors import ConnectorError


class ConnectorModel(BaseModel):
    """A connector's parameters or credential. Its validator is built at first use, not
    at import: every process loads every connector and most run a few of them; building
    all of them (e-mail addresses' Unicode tables included) took 65 ms of a worker's
    start."""

    model_config = ConfigDict(defer_build=True)


@dataclass(frozen=True)
class StepContext:
    """What a running step may use besides its params."""

    http: httpx.AsyncClient
    job_id: str
    step_id: str
    data: Mapping[str, Any]  # {"input": ..., "steps": {id: {"output": ...}}}
    timeout_s: float
    llm: Any = None  # the operator's LlmServer (`LEVQOR_LLM_*`), when configured
    mail: MailPolicy | None = None  # what e-mail steps must respect for the run's owner
    attempt_group: int = 0  # the job's replays: a retry from the dead letters starts anew

    @property
    def idempotency_key(self) -> str:
        """The same for every try of this step within an attempt group (a retry after a
        timeout, a crashed worker's successor), so a service that honours it performs
        the call once; a replay from the dead letters gets a new one."""
        seed = f"{self.job_id}:{self.step_id}:{self.attempt_group}"
        return "lvq_" + hashlib.sha256(seed.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class MailPolicy:
    """Bound to one run's owner by the engine: who may not be mailed, the one-click
    unsubscribe link for marketing mail, the SSRF check for the SMTP host, and the postal
    address a marketing footer shows when the step names none."""

    suppressed: Callable[[str, bool], Awaitable[bool]]  # (address, marketing)
    unsubscribe_url: Callable[[str], str]
    vet_host: Callable[[str, int], Awaitable[str]]
    postal_address: str | None = None  # the operator's, for marketing footers


Run = Callable[[str, dict[str, Any], dict[str, Any] | None, StepContext], Awaitable[Any]]


@dataclass(frozen=True)
class Action:
    name: str
    params: type[BaseModel]
    description: str = ""


@dataclass(frozen=True)
class Connector:
    name: str
    actions: dict[str, Action]
    run: Run
    description: str = ""
    credential_fields: tuple[str, ...] = field(default=())

    @property
    def single_action(self) -> Action | None:
        """The action used when a step leaves `action` out."""
        return next(iter(self.actions.values())) if len(self.actions) == 1 else None


def secret_field(credential: Mapping[str, Any] | None, field: str, connector: str) -> str:
    """A required field of a step's credential, or a clear error (not retryable)."""
    value = (credential or {}).get(field)
    if not value:
        raise ConnectorError(f"{connector} needs a credential with a {field}")
    return str(value)
