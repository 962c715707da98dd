"""LLM: chat completions on any OpenAI-compatible server (OpenAI, Ollama, vLLM, LM Studio).

`complete` is shared by the `llm` step and the AI planner. It speaks through the `openai`
SDK over our own httpx client: a step's calls go through the worker's guarded client, so a
credential's `base_url` passes the SSRF guard like any user URL. Usage is priced from
`LEVQOR_LLM_PRICES` (USD per million tokens) into integer micro-dollars.

Credential (optional): `api_key` and `base_url`; without one a step uses the server's own
`LEVQOR_LLM_*` settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from pydantic import ConfigDict, Field

from levqor.connectors import http
from levqor.connectors.base import Action, Connector, ConnectorModel, StepContext
from levqor.connectors.errors import ConnectorError, RetryableError
from levqor.logging import get_logger

log = get_logger("levqor.llm")
OPENAI = "https://api.openai.com/v1"


@dataclass(frozen=True)
class LlmServer:
    base_url: str
    api_key: str | None
    model: str
    prices: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Completion:
    content: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_micro_usd: int

    @property
    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}


def cost_micro_usd(prices: dict[str, tuple[float, float]], model: str, usage: Any) -> int:
    """USD per million tokens is micro-dollars per token."""
    price = prices.get(model)
    if price is None:
        log.info("llm_model_unpriced", model=model)
        return 0
    prompt, completion = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
    return round(prompt * price[0] + completion * price[1])


async def complete(
    server: LlmServer,
    messages: list[dict[str, str]],
    *,
    client: httpx.AsyncClient,
    json_mode: bool = False,
    timeout_s: float = 60,
    max_tokens: int | None = None,
    temperature: float | None = None,
    model: str | None = None,
) -> Completion:
    import openai  # a third of a second and tens of MiB: only when a model is called

    sdk = openai.AsyncOpenAI(
        base_url=server.base_url,
        api_key=server.api_key or "not-needed",  # local servers take any key
        http_client=client,
        max_retries=0,  # the engine retries, with backoff and Retry-After
        timeout=timeout_s,
    )
    options: dict[str, Any] = {}
    if json_mode:
        options["response_format"] = {"type": "json_object"}
    if max_tokens is not None:
        options["max_tokens"] = max_tokens
    if temperature is not None:
        options["temperature"] = temperature
    try:
        answer = await sdk.chat.completions.create(
            model=model or server.model,
            messages=messages,  # type: ignore[arg-type]
            **options,
        )
    except openai.APIStatusError as exc:
        http.raise_for_status(exc.response, detail=f"llm: {exc.message}")
        raise ConnectorError(f"llm: {exc.message}") from exc
    except (openai.APITimeoutError, openai.APIConnectionError) as exc:
        raise RetryableError(f"llm: {type(exc).__name__}: {exc}") from exc
    if not answer.choices:
        raise RetryableError("llm: the server answered no choices")
    used = answer.model or model or server.model
    return Completion(
        content=answer.choices[0].message.content or "",
        model=used,
        prompt_tokens=answer.usage.prompt_tokens if answer.usage else 0,
        completion_tokens=answer.usage.completion_tokens if answer.usage else 0,
        cost_micro_usd=cost_micro_usd(server.prices, used, answer.usage),
    )


class Chat(ConnectorModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    prompt: str = Field(min_length=1, max_length=100_000)
    system: str | None = Field(None, max_length=20_000)
    model: str | None = Field(None, max_length=200)
    json_mode: bool = Field(False, alias="json", description="Ask for a JSON object answer.")
    max_tokens: int | None = Field(None, gt=0, le=100_000)
    temperature: float | None = Field(None, ge=0, le=2)


async def run(
    _action: str, params: dict[str, Any], credential: dict[str, Any] | None, context: StepContext
) -> Any:
    chat = Chat.model_validate(params)
    server = _server(credential, context)
    messages = [{"role": "system", "content": chat.system}] if chat.system else []
    messages.append({"role": "user", "content": chat.prompt})
    completion = await complete(
        server,
        messages,
        client=context.http,
        json_mode=chat.json_mode,
        timeout_s=context.timeout_s,
        max_tokens=chat.max_tokens,
        temperature=chat.temperature,
        model=chat.model,
    )
    output: dict[str, Any] = {
        "content": completion.content,
        "model": completion.model,
        "usage": completion.usage,
        "cost_micro_usd": completion.cost_micro_usd,
    }
    if chat.json_mode:
        try:
            output["json"] = orjson.loads(completion.content)
        except orjson.JSONDecodeError as exc:
            raise RetryableError("llm: asked for JSON, got something else") from exc
    return output


def _server(credential: dict[str, Any] | None, context: StepContext) -> LlmServer:
    if credential and (credential.get("api_key") or credential.get("base_url")):
        fallback = context.llm
        return LlmServer(
            base_url=credential.get("base_url") or OPENAI,
            api_key=credential.get("api_key"),
            model=credential.get("model") or (fallback.model if fallback else "gpt-4o-mini"),
            prices=fallback.prices if fallback else {},
        )
    if not isinstance(context.llm, LlmServer):
        raise ConnectorError("llm: no credential given and no LEVQOR_LLM_BASE_URL configured")
    return context.llm


CONNECTOR = Connector(
    "llm",
    {"chat": Action("chat", Chat, "Ask a language model; optionally for JSON.")},
    run,
    "Summarise, classify or draft text with an OpenAI-compatible model.",
    credential_fields=("api_key", "base_url"),
)


def server_from_settings(settings: Any) -> LlmServer | None:
    """The operator's LLM (`LEVQOR_LLM_*`), or None when none is configured."""
    if not settings.llm_base_url:
        return None
    key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    return LlmServer(
        base_url=settings.llm_base_url.rstrip("/"),
        api_key=key,
        model=settings.llm_model or "gpt-4o-mini",
        prices=dict(settings.llm_prices),
    )
