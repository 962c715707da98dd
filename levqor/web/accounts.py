"""Sign-up, log-in and log-out pages over the accounts service, and the dashboard's door."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from levqor import errors
from levqor.accounts import service as accounts
from levqor.accounts import sessions
from levqor.accounts.api import DEVICE_COOKIE, DEVICE_COOKIE_MAX_AGE
from levqor.accounts.api_deps import AnonymousLimit, client_ip
from levqor.accounts.schemas import SignupIn
from levqor.deps import RuntimeDep, SessionDep
from levqor.web import csrf
from levqor.web import session as web_session
from levqor.web.rendering import redirect, render
from levqor.web.session import Viewer

router = APIRouter(include_in_schema=False)
Csrf = Annotated[None, Depends(csrf.verify)]


@router.get("/signup", response_class=HTMLResponse)
async def signup_page(request: Request, viewer: Viewer) -> Response:
    if viewer is not None:
        return redirect(request, "/app")
    return render(request, "signup.html", {"form": {}, "noindex": True})


@router.post("/signup", response_class=HTMLResponse, dependencies=[AnonymousLimit])
async def signup(
    request: Request,
    _csrf: Csrf,
    session: SessionDep,
    runtime: RuntimeDep,
    email: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=1024)],
    name: Annotated[str, Form(max_length=200)] = "",
    marketing_consent: Annotated[bool, Form()] = False,
) -> Response:
    form = {"email": email, "name": name, "marketing_consent": marketing_consent}
    try:
        body = SignupIn(
            email=email, password=password, name=name or None, marketing_consent=marketing_consent
        )
    except ValidationError as exc:
        problems = {str(error["loc"][0]): error["msg"] for error in exc.errors()}
        return render(request, "signup.html", {"form": form, "problems": problems}, status_code=422)
    try:
        _user, pair = await accounts.signup(
            session,
            kit=runtime.auth,
            email=body.email,
            password=body.password,
            name=body.name,
            marketing_consent=body.marketing_consent,
            referral_code=request.cookies.get(accounts.REFERRAL_COOKIE),
        )
    except errors.LevqorError as exc:
        problems = {str(exc.extra.get("field") or "email"): exc.detail}
        return render(
            request, "signup.html", {"form": form, "problems": problems}, status_code=exc.status
        )
    web_session.signed_in(request, pair, {})
    return redirect(request, "/app")


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, viewer: Viewer, next: str = "/app") -> Response:
    if viewer is not None:
        return redirect(request, _local(next))
    return render(request, "login.html", {"next": _local(next), "noindex": True})


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    _csrf: Csrf,
    session: SessionDep,
    runtime: RuntimeDep,
    email: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=1024)],
    next: Annotated[str, Form(max_length=2000)] = "/app",
) -> Response:
    source = accounts.LoginSource(client_ip(request), request.cookies.get(DEVICE_COOKIE))
    try:
        _user, pair, device = await accounts.login(
            session, kit=runtime.auth, email=email, password=password, source=source
        )
    except errors.LevqorError as exc:
        # The failure is counted (its writes are kept by the session), then shown here.
        context: dict[str, Any] = {"next": _local(next), "email": email, "problem": exc.detail}
        response = render(request, "login.html", context, status_code=exc.status)
        if exc.headers.get("Retry-After"):
            response.headers["Retry-After"] = exc.headers["Retry-After"]
        return response
    web_session.signed_in(request, pair, {DEVICE_COOKIE: (device, DEVICE_COOKIE_MAX_AGE)})
    return redirect(request, _local(next))


@router.post("/logout")
async def logout(
    request: Request, _csrf: Csrf, session: SessionDep, runtime: RuntimeDep, viewer: Viewer
) -> RedirectResponse:
    refresh = request.cookies.get(web_session.REFRESH_COOKIE)
    if refresh:
        await sessions.logout(session, kit=runtime.auth, refresh_token=refresh, principal=viewer)
    web_session.signed_out(request)
    return redirect(request, "/")


@router.get("/app", response_class=HTMLResponse)
async def dashboard(request: Request, viewer: Viewer) -> Response:
    if viewer is None:
        return redirect(request, f"/login?next={quote('/app')}")
    return render(request, "app.html", {"user": viewer.user, "noindex": True})


def _local(target: str) -> str:
    """Only a path on this site: `next` must never send a user elsewhere."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/app"
    return target
