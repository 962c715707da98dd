"""Server-rendered pages."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from levqor import __version__
from levqor.billing import plans

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
async def home(request: Request) -> HTMLResponse:
    return templates.TemplateResponse(request, "index.html", {"version": __version__})


@router.get("/billing", response_class=HTMLResponse)
async def billing(request: Request, checkout: str | None = None) -> HTMLResponse:
    """Where Stripe Checkout comes back to; also the price list."""
    return templates.TemplateResponse(
        request,
        "billing.html",
        {
            "checkout": checkout,
            "plans": [plan for plan in plans.PLANS.values() if plan.price_cents],
            "packs": list(plans.PACKS.values()),
            "currency": request.app.state.runtime.settings.billing_currency,
        },
    )
