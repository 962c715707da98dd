"""The workflow definition users write (API.md, "Workflows and runs"), and its checks.

Pydantic checks the structure. `check()` then checks what needs the connector registry or
a template parser: step ids unique, connector and action known, params valid for the
action, templates safe. Both report problems as field paths (`steps[2].params.url`).
"""

from __future__ import annotations

from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from levqor import errors
from levqor.connectors import registry
from levqor.db.base import utcnow
from levqor.jsonvalues import StorableJson
from levqor.workflows import templates

STEP_ID = r"^[a-z_][a-z0-9_]{0,63}$"
CRON_ALIASES = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)
# Leap days (29 February) fire every four years, eight across a skipped leap year.
CRON_MAX_YEARS_BETWEEN_FIRES = 8


def cron_problem(cron: str) -> str | None:
    """Why `cron` may not schedule a workflow, or None: the five standard fields (no
    seconds field: one run a minute is the most a schedule fires), or an alias, and it
    must fire at all (`0 0 30 2 *` never does)."""
    text = cron.strip()
    if len(text) > 100:
        return "a cron expression has at most 100 characters"
    if text.startswith("@"):
        return None if text in CRON_ALIASES else f"'{cron}' is not a cron alias we know"
    # Loaded here: a worker reads definitions by the thousand and never a schedule's
    # fire times (croniter and dateutil are 2% of its start).
    from croniter import CroniterBadDateError, croniter

    if len(text.split()) != 5 or not croniter.is_valid(text):
        return f"'{cron}' is not a cron expression of five fields (minute hour day month weekday)"
    try:
        croniter(text, utcnow(), max_years_between_matches=CRON_MAX_YEARS_BETWEEN_FIRES).get_next()
    except CroniterBadDateError:
        return f"'{cron}' never fires"
    return None


class InvalidDefinition(errors.InvalidRequest):
    """The workflow definition is not valid."""

    status = 422
    code = "invalid_definition"


class Trigger(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["manual", "webhook", "schedule"] = "manual"
    cron: str | None = Field(None, examples=["0 9 * * 1"])
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, cron: str | None) -> str | None:
        if cron is not None:
            found = cron_problem(cron)
            if found:
                raise ValueError(found)
        return cron

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone '{name}'") from exc
        return name

    @model_validator(mode="after")
    def _cron_only_for_schedules(self) -> Trigger:
        if self.type == "schedule" and self.cron is None:
            raise ValueError("a schedule trigger needs 'cron'")
        if self.type != "schedule" and self.cron is not None:
            raise ValueError("'cron' is only for schedule triggers")
        return self


class Retry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(3, ge=1, le=25)
    backoff_s: float = Field(2, gt=0, le=3600)
    max_backoff_s: float = Field(600, gt=0, le=24 * 3600)


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str = Field(pattern=STEP_ID, description="Unique in the workflow; `steps.<id>.output`.")
    connector: str = Field(min_length=1, max_length=64)
    action: str | None = Field(None, max_length=64)
    credential: str | None = Field(None, pattern=r"^cred_[a-z0-9]+$")
    params: dict[str, StorableJson] = Field(default_factory=dict)
    if_: str | None = Field(None, alias="if", max_length=4096)
    retry: Retry = Field(default_factory=Retry)
    timeout_s: float = Field(30, gt=0, le=3600)
    on_error: Literal["fail", "continue"] = "fail"


class WorkflowDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(None, max_length=2000)
    trigger: Trigger = Field(default_factory=Trigger)
    steps: list[Step] = Field(min_length=1, max_length=100)

    def dump(self) -> dict[str, Any]:
        """The stored JSON form (aliases, so `if` stays `if`)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def check(definition: WorkflowDefinition, *, prefix: str = "definition") -> None:
    """Raise InvalidDefinition naming every problem Pydantic cannot see."""
    found: list[dict[str, str]] = []
    seen: set[str] = set()
    for index, step in enumerate(definition.steps):
        where = f"{prefix}.steps[{index}]"
        if step.id in seen:
            found.append({"field": f"{where}.id", "message": f"duplicate step id '{step.id}'"})
        seen.add(step.id)
        found += _check_step(step, where)
    if found:
        summary = "; ".join(f"{item['field']}: {item['message']}" for item in found)
        raise InvalidDefinition(summary, errors=found)


def _check_step(step: Step, where: str) -> list[dict[str, str]]:
    try:
        action = registry.resolve(step.connector, step.action)
    except registry.UnknownAction as exc:
        return [{"field": f"{where}.connector", "message": exc.detail}]
    found = _params_problems(action.params, step.params, f"{where}.params")
    for path, source in _templates(step.params, f"{where}.params"):
        found += [{"field": path, "message": problem} for problem in templates.problems(source)]
    if step.if_ is not None:
        found += [{"field": f"{where}.if", "message": p} for p in templates.problems(step.if_)]
    return found


def _params_problems(
    model: type[BaseModel], params: dict[str, Any], where: str
) -> list[dict[str, str]]:
    """Validate params now, except values that are templates: those are typed after rendering."""
    try:
        model.model_validate(params)
    except ValidationError as exc:
        return [
            {"field": _join(where, issue["loc"]), "message": issue["msg"]}
            for issue in exc.errors()
            if not templates.is_template(issue.get("input"))
        ]
    return []


def _templates(value: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [pair for key, item in value.items() for pair in _templates(item, f"{path}.{key}")]
    if isinstance(value, list):
        return [
            pair
            for index, item in enumerate(value)
            for pair in _templates(item, f"{path}[{index}]")
        ]
    return [(path, value)] if templates.is_template(value) else []


def _join(prefix: str, location: tuple[Any, ...]) -> str:
    path = prefix
    for part in location:
        if part == "root":  # RootModel's own level
            continue
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path
