"""Who is signed in to the pages: a cookie session over the accounts service's tokens.

A login or signup sets two HttpOnly, SameSite=Lax cookies (Secure over HTTPS): the
short-lived access JWT and the refresh token. A page reads the access token; once it has
expired, the refresh token is rotated (reuse detection and revocation are the accounts
service's), and the new pair rides back on the page's response (`render` sets it). Log
out revokes the login and clears both. The API never reads these cookies: it takes
bearer tokens only, so it needs no CSRF defence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request, Response

from levqor.accounts import service as accounts
from levqor.accounts import sessions
from levqor.accounts.errors import InvalidToken
from levqor.accounts.kit import Principal, TokenPair
from levqor.accounts.models import User
from levqor.deps import ReadSessionDep, RuntimeDep
from levqor.errors import LevqorError
from levqor.runtime import Runtime

ACCESS_COOKIE = "levqor_access"
REFRESH_COOKIE = "levqor_session"


@dataclass
class CookieChanges:
    """Cookies a page's response must set or clear (a refreshed or ended login)."""

    pair: TokenPair | None = None
    clear: bool = False
    extra: dict[str, tuple[str, int]] = field(default_factory=dict)  # name -> (value, max_age)

    def apply(self, response: Response, runtime: Runtime) -> None:
        secure = runtime.settings.public_url.startswith("https://")
        if self.clear:
            for name in (ACCESS_COOKIE, REFRESH_COOKIE):
                response.delete_cookie(name, path="/", secure=secure, httponly=True, samesite="lax")
        if self.pair is not None:
            lifetimes = {
                ACCESS_COOKIE: (self.pair.access_token, self.pair.expires_in),
                REFRESH_COOKIE: (self.pair.refresh_token, runtime.settings.refresh_token_ttl_s),
            }
            for name, (value, max_age) in {**lifetimes, **self.extra}.items():
                response.set_cookie(
                    name,
                    value,
                    max_age=max_age,
                    path="/",
                    secure=secure,
                    httponly=True,
                    samesite="lax",
                )


def changes(request: Request) -> CookieChanges:
    found: CookieChanges | None = getattr(request.state, "cookie_changes", None)
    if found is None:
        found = CookieChanges()
        request.state.cookie_changes = found
    return found


def signed_in(request: Request, pair: TokenPair, extra: dict[str, tuple[str, int]]) -> None:
    """A login or signup succeeded: its cookies go out with the response."""
    pending = changes(request)
    pending.pair, pending.clear, pending.extra = pair, False, extra


def signed_out(request: Request) -> None:
    pending = changes(request)
    pending.pair, pending.clear = None, True
    request.state.viewer = None


async def viewer(
    request: Request, runtime: RuntimeDep, session: ReadSessionDep
) -> Principal | None:
    """The signed-in user of this page request, refreshing an expired access token; None
    for a visitor (or a login that ended: revoked, expired, or its token reused). Reads
    through the request's read session, the one a page's own queries share."""
    access = request.cookies.get(ACCESS_COOKIE)
    refresh = request.cookies.get(REFRESH_COOKIE)
    principal = None
    if access:
        try:
            principal = await accounts.authenticate(session, kit=runtime.auth, credential=access)
        except LevqorError:
            principal = None
    if principal is None and refresh:
        principal = await _refreshed(request, runtime, refresh)
    request.state.viewer = principal
    return principal


async def _refreshed(request: Request, runtime: Runtime, refresh: str) -> Principal | None:
    try:
        async with runtime.db.session(write=True) as session, session.begin():
            pair = await sessions.refresh(session, kit=runtime.auth, refresh_token=refresh)
            principal = await accounts.authenticate(
                session, kit=runtime.auth, credential=pair.access_token
            )
    except (InvalidToken, LevqorError):
        signed_out(request)
        return None
    changes(request).pair = pair
    return principal


Viewer = Annotated[Principal | None, Depends(viewer)]


class LoginRequired(Exception):
    """A page for signed-in users only, asked for by a visitor: they go to log in."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


async def owner(request: Request, viewer: Viewer) -> User:
    """Whose objects a dashboard page shows and changes. The one place that decides it:
    today the signed-in user; a workspace can take its place here."""
    if viewer is None:
        raise LoginRequired(request.url.path)
    return viewer.user


Owner = Annotated[User, Depends(owner)]
