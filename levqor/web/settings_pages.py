"""The dashboard's credentials and API keys: secrets shown once, stored encrypted (or
hashed), never shown again."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import AnyHttpUrl, TypeAdapter, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from levqor import errors
from levqor.accounts import service as accounts
from levqor.accounts.models import API_KEY_SCOPES
from levqor.connectors import registry
from levqor.connectors import service as connectors
from levqor.deps import ReadSessionDep, RuntimeDep, SessionDep
from levqor.jsonvalues import StorableJson
from levqor.web import csrf
from levqor.web.dashboard import not_found
from levqor.web.rendering import redirect, render
from levqor.web.session import Owner

router = APIRouter(prefix="/app", include_in_schema=False)
Csrf = Annotated[None, Depends(csrf.verify)]
# The field types of the API's CredentialIn, for the same checks on the form's values.
SECRETS: TypeAdapter[dict[str, StorableJson]] = TypeAdapter(dict[str, StorableJson])
BASE_URL: TypeAdapter[AnyHttpUrl | None] = TypeAdapter(AnyHttpUrl | None)
FIELD_PREFIX = "secret_"  # form fields carrying the connector's declared secret fields


@router.get("/credentials", response_class=HTMLResponse)
async def credentials(request: Request, owner: Owner, session: ReadSessionDep) -> HTMLResponse:
    return await _credentials(request, owner, session)


async def _credentials(
    request: Request,
    owner: Any,
    session: AsyncSession,
    *,
    chosen: str | None = None,
    problem: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    saved, _ = await connectors.list_for_user(session, user_id=owner.id, limit=200)
    connector = registry.CONNECTORS.get(chosen or "")
    return render(
        request,
        "credentials.html",
        {
            "credentials": saved,
            "catalogue": sorted(registry.CONNECTORS),
            "connector": connector,
            "problem": problem,
            "noindex": True,
        },
        status_code=status_code,
    )


@router.get("/credentials/new", response_class=HTMLResponse)
async def new_credential(
    request: Request, owner: Owner, session: ReadSessionDep, connector: str = ""
) -> HTMLResponse:
    """The form for one connector: the fields its catalogue entry declares."""
    if connector not in registry.CONNECTORS:
        return not_found(request, "connector")
    return await _credentials(request, owner, session, chosen=connector)


@router.post("/credentials", response_class=HTMLResponse)
async def save_credential(
    request: Request, _csrf: Csrf, owner: Owner, session: SessionDep, runtime: RuntimeDep
) -> Response:
    form = await request.form()
    connector = str(form.get("connector", ""))
    name = str(form.get("name", "")).strip()[:200]
    secret: dict[str, Any] = {
        key.removeprefix(FIELD_PREFIX): str(value)
        for key, value in form.items()
        if key.startswith(FIELD_PREFIX) and str(value)
    }
    try:
        extra = json.loads(str(form.get("extra") or "{}"))
        if not isinstance(extra, dict):
            raise errors.InvalidRequest("More fields must be a JSON object.")
        if connector not in registry.CONNECTORS or not name:
            raise errors.InvalidRequest("Choose a connector and give the credential a name.")
        # The API's own field types: storable secret values (no NaN, no integer past 64
        # bits) and an http(s) base URL.
        stored = SECRETS.validate_python({**extra, **secret})
        base_url = BASE_URL.validate_python(str(form.get("base_url") or "").strip() or None)
        await connectors.create(
            session,
            user_id=owner.id,
            connector=connector,
            name=name,
            secret=stored,
            base_url=str(base_url).rstrip("/") if base_url else None,
            cipher=runtime.cipher,
        )
    except ValidationError as exc:
        problem = f"{_at(exc)}{exc.errors()[0]['msg']}"
        return await _credentials(
            request, owner, session, chosen=connector, problem=problem, status_code=422
        )
    except json.JSONDecodeError:
        problem = 'More fields must be JSON, such as {"port": 587}.'
        return await _credentials(
            request, owner, session, chosen=connector, problem=problem, status_code=422
        )
    except errors.LevqorError as exc:
        return await _credentials(
            request, owner, session, chosen=connector, problem=exc.detail, status_code=exc.status
        )
    return redirect(request, "/app/credentials")


@router.post("/credentials/{credential_id}/delete")
async def delete_credential(
    request: Request, credential_id: str, _csrf: Csrf, owner: Owner, session: SessionDep
) -> Response:
    try:
        await connectors.delete(session, user_id=owner.id, credential_id=credential_id)
    except errors.NotFound:
        return not_found(request, "credential")
    return redirect(request, "/app/credentials")


@router.get("/keys", response_class=HTMLResponse)
async def keys(request: Request, owner: Owner, session: ReadSessionDep) -> HTMLResponse:
    return await _keys(request, owner, session)


async def _keys(
    request: Request, owner: Any, session: AsyncSession, *, created: str | None = None
) -> HTMLResponse:
    listed, _ = await accounts.list_api_keys(session, user=owner, limit=200)
    context = {"keys": listed, "scopes": API_KEY_SCOPES, "created": created, "noindex": True}
    return render(request, "keys.html", context)


@router.post("/keys", response_class=HTMLResponse)
async def create_key(
    request: Request,
    _csrf: Csrf,
    owner: Owner,
    session: SessionDep,
    name: Annotated[str, Form(min_length=1, max_length=200)],
    scopes: Annotated[list[str], Form()] = [],  # noqa: B006  FastAPI copies the default
) -> HTMLResponse:
    """A new API key, shown on this page once: only its hash is kept."""
    chosen = [scope for scope in scopes if scope in API_KEY_SCOPES] or ["read"]
    _key, raw = await accounts.create_api_key(session, user=owner, name=name, scopes=chosen)
    return await _keys(request, owner, session, created=raw)


@router.post("/keys/{key_id}/delete")
async def delete_key(
    request: Request, key_id: str, _csrf: Csrf, owner: Owner, session: SessionDep
) -> Response:
    try:
        await accounts.delete_api_key(session, user=owner, key_id=key_id)
    except errors.NotFound:
        return not_found(request, "API key")
    return redirect(request, "/app/keys")


def _at(exc: ValidationError) -> str:
    location = ".".join(str(part) for part in exc.errors()[0]["loc"])
    return f"{location}: " if location else ""
