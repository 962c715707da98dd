"""Authentication and rate limiting as FastAPI dependencies.

`CurrentUser` authenticates (JWT or API key), then takes a token from the caller's bucket:
per user, with the limit of their plan or of the route. `AnonymousLimit` does the same per
client IP for routes without authentication; auth routes use the stricter `auth` policy.
Either way the rate-limit headers are queued on the request so error answers carry them too.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from levqor import metrics, openapi
from levqor.accounts import service
from levqor.accounts.errors import InvalidToken, MissingScope
from levqor.accounts.kit import Principal
from levqor.accounts.ratelimit import Decision, Policy
from levqor.deps import READ_METHODS, ReadSessionDep, RuntimeDep, SessionDep
from levqor.errors import Forbidden, RateLimited, Unauthorized
from levqor.idempotency import service as idempotency_service
from levqor.idempotency.api import Idempotency
from levqor.middleware import add_response_headers
from levqor.runtime import Runtime

AUTH_ROUTES = frozenset({"/api/v1/auth/signup", "/api/v1/auth/login", "/api/v1/auth/refresh"})


def bearer_credential(request: Request) -> str | None:
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        raise InvalidToken("Use 'Authorization: Bearer <token>'.")
    return request.headers.get("x-api-key") or None


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def route_template(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", request.url.path)


async def enforce(request: Request, runtime: Runtime, key: str, policy: Policy) -> Decision:
    decision = await runtime.limiter.hit(f"{policy.name}:{key}", policy)
    add_response_headers(request.scope, decision.headers())
    if not decision.allowed:
        metrics.labelled(metrics.RATELIMITED, policy.name).inc()
        raise RateLimited(f"Rate limit of {policy.limit} requests a minute exceeded.")
    return decision


def _route_policy(request: Request, runtime: Runtime) -> Policy | None:
    route_key = f"{request.method} {route_template(request)}"
    limit = runtime.settings.rate_limit_routes.get(route_key)
    return Policy(route_key.replace('"', ""), limit) if limit else None


def anonymous_policy(request: Request, runtime: Runtime) -> Policy:
    if (policy := _route_policy(request, runtime)) is not None:
        return policy
    if route_template(request) in AUTH_ROUTES:
        return Policy("auth", runtime.settings.rate_limit_auth_per_minute)
    return Policy("anonymous", runtime.settings.rate_limit_per_minute)


async def limit_anonymous(request: Request, runtime: RuntimeDep) -> None:
    await enforce(request, runtime, f"ip:{client_ip(request)}", anonymous_policy(request, runtime))


@openapi.needs_credential
async def authenticated(request: Request, runtime: RuntimeDep, session: SessionDep) -> Principal:
    """The caller; on a write request loaded into the request's transaction, which the
    route may change them in."""
    return await _authenticate(request, runtime, session, reader=request.method in READ_METHODS)


@openapi.needs_credential
async def authenticated_autocommit(
    request: Request, runtime: RuntimeDep, session: ReadSessionDep
) -> Principal:
    """The caller, checked outside any transaction: for routes that call an outside
    service (Stripe) and open their own short transactions around it, so no write lock
    is held while it answers."""
    return await _authenticate(request, runtime, session, reader=False)


async def _authenticate(
    request: Request, runtime: Runtime, session: AsyncSession, *, reader: bool
) -> Principal:
    credential = bearer_credential(request)
    if credential is None:
        await limit_anonymous(request, runtime)
        raise Unauthorized(headers={"WWW-Authenticate": "Bearer"})
    try:
        if reader:
            principal = await service.authenticate_reader(
                runtime.db, kit=runtime.auth, credential=credential
            )
        else:
            principal = await service.authenticate(session, kit=runtime.auth, credential=credential)
    except Unauthorized:
        # Guessing keys or tokens spends the caller's per-IP budget.
        await limit_anonymous(request, runtime)
        raise
    request.state.user_id = principal.user.id
    policy = _route_policy(request, runtime) or Policy(
        "user", runtime.settings.rate_limit_for_plan(principal.user.plan)
    )
    await enforce(request, runtime, f"user:{principal.user.id}", policy)
    if request.method not in READ_METHODS and "write" not in principal.scopes:
        raise MissingScope("This API key is read-only.")
    return principal


async def optional_user(
    request: Request, runtime: RuntimeDep, session: SessionDep
) -> Principal | None:
    """The caller when a valid credential is given; None (not 401) otherwise."""
    try:
        credential = bearer_credential(request)
        if credential is None:
            return None
        return await service.authenticate(session, kit=runtime.auth, credential=credential)
    except Unauthorized:
        return None


async def admin_user(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
    return _admin(principal)


async def admin_user_autocommit(
    principal: Annotated[Principal, Depends(authenticated_autocommit)],
) -> Principal:
    return _admin(principal)


def _admin(principal: Principal) -> Principal:
    if not principal.is_admin:
        raise Forbidden("This needs the admin role.")
    return principal


CurrentUser = Annotated[Principal, Depends(authenticated)]
OptionalUser = Annotated[Principal | None, Depends(optional_user)]
AdminUser = Annotated[Principal, Depends(admin_user)]
CurrentUserAutocommit = Annotated[Principal, Depends(authenticated_autocommit)]
AdminUserAutocommit = Annotated[Principal, Depends(admin_user_autocommit)]
AnonymousLimit = Depends(limit_anonymous)


async def get_idempotency(
    request: Request, principal: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> Idempotency:
    raw_key = request.headers.get("idempotency-key")
    key = idempotency_service.validate_key(raw_key) if raw_key is not None else None
    body = await request.body() if key is not None else b""
    return Idempotency(
        session=session,
        runtime_cipher=runtime.cipher,
        user_id=principal.user.id,
        key=key,
        fingerprint=idempotency_service.request_fingerprint(request.method, request.url.path, body),
    )


IdempotencyDep = Annotated[Idempotency, Depends(get_idempotency)]
