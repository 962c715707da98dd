"""Sign-up, log-in and log-out pages over the accounts service, and the dashboard's door."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from levqor import errors, mail
from levqor.accounts import resets, sessions
from levqor.accounts import service as accounts
from levqor.accounts.api import DEVICE_COOKIE, DEVICE_COOKIE_MAX_AGE
from levqor.accounts.api_deps import AnonymousLimit, client_ip
from levqor.accounts.errors import ResetLinkInvalid
from levqor.accounts.schemas import SignupIn
from levqor.db.base import utcnow
from levqor.deps import ReadSessionDep, RuntimeDep, SessionDep
from levqor.logging import get_logger
from levqor.web import csrf
from levqor.web import session as web_session
from levqor.web.rendering import redirect, render
from levqor.web.session import Viewer

router = APIRouter(include_in_schema=False)
log = get_logger("levqor.web")
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
            device=request.cookies.get(DEVICE_COOKIE),
        )
    except errors.LevqorError as exc:
        problems = {str(exc.extra.get("field") or "email"): exc.detail}
        return render(
            request, "signup.html", {"form": form, "problems": problems}, status_code=exc.status
        )
    web_session.signed_in(request, pair, {})
    return redirect(request, "/app")


@router.get("/login", response_class=HTMLResponse)
async def login_page(
    request: Request, viewer: Viewer, next: str = "/app", changed: bool = False
) -> Response:
    if viewer is not None:
        return redirect(request, _local(next))
    context = {"next": _local(next), "changed": changed, "noindex": True}
    return render(request, "login.html", context)


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


@router.get("/forgot", response_class=HTMLResponse)
async def forgot_page(request: Request) -> HTMLResponse:
    return render(request, "forgot.html", {"noindex": True})


@router.post("/forgot", response_class=HTMLResponse, dependencies=[AnonymousLimit])
async def forgot(
    request: Request,
    _csrf: Csrf,
    session: ReadSessionDep,
    runtime: RuntimeDep,
    email: Annotated[str, Form(max_length=320)],
) -> HTMLResponse:
    """Mail a reset link if an account uses the address. The page says the same either
    way: it must not tell a stranger which addresses have accounts."""
    if not mail.configured(runtime.settings):
        return render(request, "forgot.html", {"unavailable": True}, status_code=503)
    user = await accounts.find_by_email(session, kit=runtime.auth, email=email)
    if user is not None and user.is_active:
        token = resets.issue(runtime.auth, user, now=utcnow())
        link = f"{runtime.settings.public_url.rstrip('/')}/reset?token={token}"
        minutes = runtime.settings.password_reset_ttl_s // 60
        try:
            await mail.send(
                runtime.settings,
                to=user.email,
                subject="Reset your Levqor password",
                text=RESET_MAIL.format(link=link, minutes=minutes),
            )
        except mail.MailFailed:
            log.exception("password_reset_mail_failed", user_id=user.id)
    return render(request, "forgot.html", {"sent": True, "email": email})


@router.get("/reset", response_class=HTMLResponse)
async def reset_page(
    request: Request, session: ReadSessionDep, runtime: RuntimeDep, token: str = ""
) -> HTMLResponse:
    try:
        await resets.user_for(session, kit=runtime.auth, token=token)
    except ResetLinkInvalid as exc:
        return render(request, "reset.html", {"problem": exc.detail}, status_code=400)
    return render(request, "reset.html", {"token": token, "noindex": True})


@router.post("/reset", response_class=HTMLResponse)
async def reset(
    request: Request,
    _csrf: Csrf,
    session: SessionDep,
    runtime: RuntimeDep,
    token: Annotated[str, Form(max_length=4000)],
    password: Annotated[str, Form(max_length=1024)],
) -> Response:
    if len(password) < MIN_PASSWORD:
        problem = f"Choose at least {MIN_PASSWORD} characters."
        context = {"token": token, "password_problem": problem}
        return render(request, "reset.html", context, status_code=422)
    try:
        await resets.reset(session, kit=runtime.auth, token=token, new_password=password)
    except ResetLinkInvalid as exc:
        return render(request, "reset.html", {"problem": exc.detail}, status_code=400)
    return redirect(request, "/login?changed=1")


@router.post("/logout")
async def logout(
    request: Request, _csrf: Csrf, session: SessionDep, runtime: RuntimeDep, viewer: Viewer
) -> RedirectResponse:
    refresh = request.cookies.get(web_session.REFRESH_COOKIE)
    if refresh:
        await sessions.logout(session, kit=runtime.auth, refresh_token=refresh, principal=viewer)
    web_session.signed_out(request)
    return redirect(request, "/")


MIN_PASSWORD = SignupIn.model_fields["password"].metadata[0].min_length
RESET_MAIL = """Someone (we hope you) asked to reset the password of your Levqor account.

Choose a new password here (the link works once, for {minutes} minutes):

{link}

If it was not you, ignore this message: your password stays as it is.
"""


def _local(target: str) -> str:
    """Only a path on this site: `next` must never send a user elsewhere."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/app"
    return target
