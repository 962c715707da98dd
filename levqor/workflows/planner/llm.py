"""The LLM planner: the model drafts the workflow JSON, our own checks judge it.

It is sent the connector catalogue (each action's params schema) and the definition's
JSON Schema, and asked for one JSON object. The answer is validated with the same model
and checks as `POST /workflows`; the problems, named by field, go back for up to two
repair rounds. Token use accumulates over the rounds and is recorded by the caller.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from pydantic import ValidationError

from levqor import errors
from levqor.connectors import registry
from levqor.connectors.llm import Completion, LlmServer, complete
from levqor.workflows.definition import WorkflowDefinition
from levqor.workflows.planner.plans import Plan, asked_for, validated

REPAIRS = 2
SYSTEM = """You turn a plain-words automation request into a Levqor workflow.
Answer with one JSON object, the workflow definition, matching this JSON Schema:
{schema}

Steps use only these connectors and actions (params JSON Schema for each):
{catalogue}

Parameter strings may be Jinja templates over the run's data: `{{{{ input.x }}}}` is the
trigger's payload (a webhook body; Stripe events put the object in input.data.object),
`{{{{ steps.<id>.output.y }}}}` an earlier step's output. Use a `schedule` trigger with a
5-field `cron` for "every ...", `webhook` for events from outside, else `manual`.
Leave `credential` out. Do not invent connectors, actions or params. When the request
does not give a detail a step needs (which chat, which repository, which address), do not
guess it: write the param as `{{{{ input.<step id>_<param> }}}}` and it is asked for."""


class ModelFailed(errors.LevqorError):
    """The model did not produce a valid workflow, even after repairs."""

    status = 502
    code = "planner_failed"

    def __init__(self, detail: str, usage: dict[str, Any]) -> None:
        super().__init__(detail)
        self.usage = usage


def system_prompt() -> str:
    catalogue = {
        name: {
            action.name: action.params.model_json_schema(by_alias=True)
            for action in connector.actions.values()
        }
        for name, connector in sorted(registry.CONNECTORS.items())
    }
    schema = WorkflowDefinition.model_json_schema(by_alias=True)
    return SYSTEM.format(
        schema=orjson.dumps(schema).decode(), catalogue=orjson.dumps(catalogue).decode()
    )


async def plan_with_llm(prompt: str, server: LlmServer, *, client: httpx.AsyncClient) -> Plan:
    messages = [
        {"role": "system", "content": system_prompt()},
        {"role": "user", "content": prompt},
    ]
    rounds: list[Completion] = []
    problem = ""
    for _ in range(1 + REPAIRS):
        completion = await complete(server, messages, client=client, json_mode=True)
        rounds.append(completion)
        usage = _usage(rounds)
        try:
            answer = orjson.loads(completion.content)
            if isinstance(answer, dict) and isinstance(answer.get("definition"), dict):
                answer = answer["definition"]  # a model that wrapped its answer
            definition = validated(answer)
            return Plan(
                definition=definition,
                planner="llm",
                usage=usage,
                inputs=asked_for(definition),
            )
        except orjson.JSONDecodeError:
            problem = "the answer is not JSON"
        except ValidationError as exc:
            problem = "; ".join(
                f"{'.'.join(str(part) for part in issue['loc']) or 'definition'}: {issue['msg']}"
                for issue in exc.errors()
            )
        except errors.InvalidRequest as exc:
            problem = exc.detail
        messages += [
            {"role": "assistant", "content": completion.content},
            {
                "role": "user",
                "content": f"That is not a valid workflow: {problem}. "
                "Answer again with the corrected JSON object only.",
            },
        ]
    raise ModelFailed(f"the model's workflow stayed invalid: {problem}", _usage(rounds))


def _usage(rounds: list[Completion]) -> dict[str, Any]:
    return {
        "model": rounds[-1].model,
        "prompt_tokens": sum(r.prompt_tokens for r in rounds),
        "completion_tokens": sum(r.completion_tokens for r in rounds),
        "cost_micro_usd": sum(r.cost_micro_usd for r in rounds),
    }
