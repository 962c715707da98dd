"""The public pages: landing (with the plain-words planner box), pricing, policies, and
what search engines read (robots.txt, sitemap.xml)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any
from xml.sax.saxutils import escape

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, Response

from levqor import errors
from levqor.accounts import service as accounts
from levqor.accounts.api_deps import AnonymousLimit
from levqor.billing import plans
from levqor.billing import service as billing
from levqor.connectors import registry
from levqor.deps import ReadSessionDep, RuntimeDep
from levqor.web import csrf
from levqor.web.rendering import HERE, render
from levqor.web.session import Viewer
from levqor.workflows import planner

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class PublicPage:
    path: str
    template: str
    updated: date  # when its content last changed: the sitemap's true lastmod


# Change `updated` with the page's words: search engines recrawl by it.
PAGES = (
    PublicPage("/", "index.html", date(2026, 11, 29)),
    PublicPage("/pricing", "pricing.html", date(2026, 11, 29)),
    PublicPage("/legal/refunds", "legal_refunds.html", date(2026, 11, 29)),
    PublicPage("/legal/privacy", "legal_privacy.html", date(2026, 11, 29)),
    PublicPage("/legal/terms", "legal_terms.html", date(2026, 11, 29)),
)
REFUND_DAYS = 7
TESTIMONIALS_FILE = HERE / "testimonials.json"


@router.get("/", response_class=HTMLResponse)
async def landing(request: Request, _viewer: Viewer) -> HTMLResponse:
    erased = request.query_params.get("erased") == "1"
    return render(request, "index.html", {"description": DESCRIPTION, "erased": erased})


@router.post("/draft", response_class=HTMLResponse, dependencies=[AnonymousLimit])
async def draft(
    request: Request,
    _csrf: Annotated[None, Depends(csrf.verify)],
    prompt: Annotated[str, Form(min_length=3, max_length=2000)],
) -> HTMLResponse:
    """The landing box: plain words -> the draft as readable steps (offline rules planner;
    nothing saved, no account needed). htmx swaps in the fragment; without JavaScript
    the whole page comes back with it."""
    context: dict[str, Any] = {"prompt": prompt, "description": DESCRIPTION}
    try:
        drafted = planner.plan_with_rules(prompt)
    except errors.LevqorError as exc:
        context["problem"] = exc.detail
    else:
        context["draft"] = readable(drafted.definition, drafted.inputs)
        context["notes"] = [*drafted.notes, *drafted.not_understood]
    fragment = request.headers.get("hx-request") == "true"
    return render(request, "_draft.html" if fragment else "index.html", context)


def readable(definition: dict[str, Any], inputs: Sequence[planner.Needed] = ()) -> dict[str, Any]:
    """A draft as a person reads it: when it runs, then each step in words, with the
    details still to be given (`inputs`) asked at their step instead of shown."""
    trigger = definition.get("trigger") or {"type": "manual"}
    steps = []
    for step in definition.get("steps", []):
        connector = registry.get(step["connector"])
        action = registry.resolve(step["connector"], step.get("action"))
        asking = [needed for needed in inputs if needed.step == step["id"]]
        asked = {needed.param for needed in asking}
        steps.append(
            {
                "id": step["id"],
                "connector": connector.name.replace("_", " ").capitalize(),
                "what": action.description or action.name.replace("_", " "),
                "params": {
                    name: _shown(value)
                    for name, value in step.get("params", {}).items()
                    if name not in asked
                },
                "asking": asking,
            }
        )
    return {"name": definition.get("name"), "when": _when(trigger), "steps": steps}


def _when(trigger: dict[str, Any]) -> str:
    kind = trigger.get("type")
    if kind == "webhook":
        return "When its webhook URL is called (the request body is the run's input)"
    if kind == "schedule":
        cron, zone = trigger.get("cron", ""), trigger.get("timezone", "UTC")
        return f"{schedule_in_words(cron)} ({zone}; cron {cron})"
    return "When you start it (a button, the API or the CLI)"


WEEKDAY_NAMES = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")


def schedule_in_words(cron: str) -> str:
    """The common cron shapes in words ("Every weekday at 09:00"); others as they are."""
    fields = cron.split()
    if len(fields) != 5 or fields[3] != "*":
        return f"On the schedule {cron}"
    minute, hour, day, _month, weekday = fields
    if hour == "*" and day == weekday == "*":
        if minute == "*":
            return "Every minute"
        if minute.startswith("*/"):
            return f"Every {minute[2:]} minutes"
        if minute.isdigit():
            return "Every hour" if minute == "0" else f"Every hour at minute {minute}"
    if hour.startswith("*/") and minute.isdigit() and day == weekday == "*":
        return f"Every {hour[2:]} hours"
    if not (minute.isdigit() and all(part.isdigit() for part in hour.split(","))):
        return f"On the schedule {cron}"
    times = " and ".join(f"{int(part):02d}:{int(minute):02d}" for part in hour.split(","))
    days = _days_in_words(day, weekday)
    return f"{days} at {times}" if days else f"On the schedule {cron}"


def _days_in_words(day: str, weekday: str) -> str:
    if day != "*":
        return f"On day {day} of every month" if day.isdigit() and weekday == "*" else ""
    if weekday == "*":
        return "Every day"
    if weekday == "1-5":
        return "Every weekday"
    if weekday == "0,6":
        return "Every weekend day"
    if all(part.isdigit() and int(part) < 7 for part in weekday.split(",")):
        return "Every " + " and ".join(WEEKDAY_NAMES[int(part)] for part in weekday.split(","))
    return ""


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


@router.get("/pricing", response_class=HTMLResponse)
async def pricing(
    request: Request, runtime: RuntimeDep, session: ReadSessionDep, _viewer: Viewer
) -> HTMLResponse:
    return render(
        request,
        "pricing.html",
        {
            "plans": list(plans.PLANS.values()),
            "packs": list(plans.PACKS.values()),
            "currency": runtime.settings.billing_currency,
            "free_credits": runtime.settings.free_credits,
            "refund_days": REFUND_DAYS,
            "testimonials": await testimonials(session, runtime.auth),
            "description": "Levqor's plans and credit packs, with a 7-day refund guarantee.",
        },
    )


async def testimonials(session: Any, kit: Any) -> list[dict[str, Any]]:
    """Quotes from the data file. "Verified" only when the quote names the account it
    came from and that account has paid: never claimed, never invented."""
    try:
        quotes = json.loads(TESTIMONIALS_FILE.read_text())
    except FileNotFoundError:
        return []
    shown = []
    for quote in quotes:
        verified = False
        if quote.get("account_email"):
            user = await accounts.find_by_email(session, kit=kit, email=quote["account_email"])
            verified = user is not None and await billing.has_paid(session, user_id=user.id)
        shown.append({"quote": quote["quote"], "who": quote["who"], "verified": verified})
    return shown


@router.get("/legal/{page}", response_class=HTMLResponse)
async def legal(request: Request, page: str, runtime: RuntimeDep, _viewer: Viewer) -> HTMLResponse:
    if page not in ("refunds", "privacy", "terms"):
        raise errors.NotFound("No such page.")
    return render(
        request,
        f"legal_{page}.html",
        {"refund_days": REFUND_DAYS, "public_url": runtime.settings.public_url},
    )


@router.get("/favicon.ico")
async def favicon() -> FileResponse:
    """Browsers ask for it whatever the page says."""
    return FileResponse(HERE / "static" / "favicon.svg", media_type="image/svg+xml")


@router.get("/robots.txt", response_class=PlainTextResponse)
async def robots(runtime: RuntimeDep) -> str:
    base = runtime.settings.public_url.rstrip("/")
    return (
        "User-agent: *\nAllow: /\nDisallow: /app\nDisallow: /admin\nDisallow: /api/\n"
        f"Disallow: /hooks/\n\nSitemap: {base}/sitemap.xml\n"
    )


@router.get("/sitemap.xml")
async def sitemap(runtime: RuntimeDep) -> Response:
    base = runtime.settings.public_url.rstrip("/")
    urls = "".join(
        f"  <url><loc>{escape(base + page.path)}</loc>"
        f"<lastmod>{page.updated.isoformat()}</lastmod></url>\n"
        for page in PAGES
    )
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
        f"{urls}</urlset>\n"
    )
    return Response(body, media_type="application/xml")


DESCRIPTION = (
    "Levqor turns a plain-words request into a versioned workflow and runs it durably: "
    "webhooks, schedules, Slack, e-mail, LLMs and more, on your own server."
)
