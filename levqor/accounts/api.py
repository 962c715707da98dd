"""Accounts routes: thin; parse, authorize, call the service, shape the answer."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response, status

from levqor import errors
from levqor.accounts import service, sessions
from levqor.accounts.api_deps import (
    AnonymousLimit,
    CurrentUser,
    IdempotencyDep,
    OptionalUser,
    client_ip,
)
from levqor.accounts.kit import TokenPair
from levqor.accounts.models import User
from levqor.accounts.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    LoginIn,
    RefreshIn,
    SessionOut,
    SignupIn,
    TokensOut,
    UserRead,
)
from levqor.deps import Cursor, Limit, RuntimeDep, SessionDep
from levqor.types import Page

auth_router = APIRouter(prefix="/api/v1/auth", tags=["auth"], dependencies=[AnonymousLimit])
router = APIRouter(prefix="/api/v1", tags=["accounts"])
# A browser that signed in before: its failures count apart from its IP's, so a stranger
# guessing the password from the same network never locks the owner out.
DEVICE_COOKIE = "levqor_device"
DEVICE_COOKIE_MAX_AGE = 365 * 24 * 3600


def _session_out(user: User, pair: TokenPair) -> SessionOut:
    return SessionOut(
        user=UserRead.model_validate(user),
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_in=pair.expires_in,
    )


@auth_router.post("/signup", status_code=status.HTTP_201_CREATED, responses=errors.documented(409))
async def signup(
    body: SignupIn, request: Request, session: SessionDep, runtime: RuntimeDep
) -> SessionOut:
    user, pair = await service.signup(
        session,
        kit=runtime.auth,
        email=body.email,
        password=body.password,
        name=body.name,
        marketing_consent=body.marketing_consent,
        referral_code=body.ref or request.cookies.get(service.REFERRAL_COOKIE),
        device=request.cookies.get(DEVICE_COOKIE),
    )
    return _session_out(user, pair)


@auth_router.post("/login", responses=errors.documented(401))
async def login(
    body: LoginIn, request: Request, response: Response, session: SessionDep, runtime: RuntimeDep
) -> SessionOut:
    source = service.LoginSource(client_ip(request), request.cookies.get(DEVICE_COOKIE))
    user, pair, device = await service.login(
        session, kit=runtime.auth, email=body.email, password=body.password, source=source
    )
    response.set_cookie(
        DEVICE_COOKIE,
        device,
        max_age=DEVICE_COOKIE_MAX_AGE,
        path="/",
        secure=runtime.settings.public_url.startswith("https://"),
        httponly=True,
        samesite="lax",
    )
    return _session_out(user, pair)


@auth_router.post("/refresh", responses=errors.documented(401))
async def refresh(body: RefreshIn, session: SessionDep, runtime: RuntimeDep) -> TokensOut:
    pair = await sessions.refresh(session, kit=runtime.auth, refresh_token=body.refresh_token)
    return TokensOut(
        access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in
    )


@auth_router.post(
    "/logout", status_code=status.HTTP_204_NO_CONTENT, responses=errors.documented(401)
)
async def logout(
    body: RefreshIn, session: SessionDep, runtime: RuntimeDep, principal: OptionalUser
) -> Response:
    await sessions.logout(
        session, kit=runtime.auth, refresh_token=body.refresh_token, principal=principal
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me")
async def me(principal: CurrentUser) -> UserRead:
    return UserRead.model_validate(principal.user)


@router.post("/api-keys", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated)
async def create_api_key(
    body: ApiKeyCreate, principal: CurrentUser, session: SessionDep, idempotency: IdempotencyDep
) -> Any:
    if (replayed := await idempotency.replay()) is not None:
        return replayed
    key, raw = await service.create_api_key(
        session, user=principal.user, name=body.name, scopes=list(body.scopes)
    )
    answer = ApiKeyCreated(
        id=key.id,
        name=key.name,
        prefix=key.prefix,
        scopes=key.scopes,
        created_at=key.created_at,
        last_used_at=key.last_used_at,
        key=raw,
    ).model_dump(mode="json")
    await idempotency.remember(status.HTTP_201_CREATED, answer)
    return answer


@router.get("/api-keys")
async def list_api_keys(
    principal: CurrentUser, session: SessionDep, limit: Limit = 100, cursor: Cursor = None
) -> Page[ApiKeyRead]:
    keys, next_cursor = await service.list_api_keys(
        session, user=principal.user, limit=limit, cursor=cursor
    )
    return Page(data=[ApiKeyRead.model_validate(key) for key in keys], next_cursor=next_cursor)


@router.delete("/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_api_key(key_id: str, principal: CurrentUser, session: SessionDep) -> Response:
    await service.delete_api_key(session, user=principal.user, key_id=key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
