"""Server-rendered pages: Stripe Checkout's return page, the unsubscribe page and the
API documentation (Swagger UI from local assets)."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from levqor.billing import plans
from levqor.compliance import service as suppressions
from levqor.deps import RuntimeDep, SessionDep
from levqor.runtime import Runtime
from levqor.web.rendering import render

router = APIRouter(include_in_schema=False)
# Swagger UI's files, from the fastapi-offline package: /docs works with no network.
DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"


@router.get("/docs", response_class=HTMLResponse)
async def docs(request: Request) -> HTMLResponse:
    return render(request, "docs.html", {})


@router.get("/billing", response_class=HTMLResponse)
async def billing(request: Request, checkout: str | None = None) -> HTMLResponse:
    """Where Stripe Checkout comes back to; also the price list."""
    return render(
        request,
        "billing.html",
        {
            "checkout": checkout,
            "plans": [plan for plan in plans.PLANS.values() if plan.price_cents],
            "packs": list(plans.PACKS.values()),
            "currency": request.app.state.runtime.settings.billing_currency,
        },
    )


# Unsubscribe (RFC 8058): one-click by POST, a confirmation page on GET. No login: the
# signed token is the authority. GET never unsubscribes anyone (mail scanners follow
# links); it shows a page whose button POSTs. Mail clients send the one-click POST
# themselves (`List-Unsubscribe=One-Click`).
Token = Query(min_length=10, max_length=500)


@router.get("/unsubscribe", response_class=HTMLResponse)
async def confirm(request: Request, runtime: RuntimeDep, token: str = Token) -> HTMLResponse:
    valid = suppressions.read_unsubscribe_token(_key(runtime), token) is not None
    return render(
        request,
        "unsubscribe.html",
        {"state": "confirm" if valid else "invalid", "token": token},
        status_code=200 if valid else 400,
    )


@router.post("/unsubscribe", response_class=HTMLResponse)
async def unsubscribe(
    request: Request, runtime: RuntimeDep, session: SessionDep, token: str = Token
) -> HTMLResponse:
    found = suppressions.read_unsubscribe_token(_key(runtime), token)
    if found is not None:
        await suppressions.unsubscribe(session, found)
    return render(
        request,
        "unsubscribe.html",
        {"state": "done" if found else "invalid", "token": token},
        status_code=200 if found else 400,
    )


def _key(runtime: Runtime) -> str:
    key = runtime.settings.blind_index_key
    assert key is not None  # load_settings always fills it
    return key.get_secret_value()
