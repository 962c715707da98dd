"""The pages' templates and what every page is rendered with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from levqor import __version__

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")


def render(
    request: Request, name: str, context: dict[str, Any] | None = None, *, status_code: int = 200
) -> HTMLResponse:
    """`name` with the page's shared context: the version, who is signed in (if anyone,
    set by `web.session`) and the CSRF token its forms carry."""
    shared = {
        "version": __version__,
        "viewer": getattr(request.state, "viewer", None),
        "csrf_token": getattr(request.state, "csrf_token", ""),
    }
    return templates.TemplateResponse(
        request, name, {**shared, **(context or {})}, status_code=status_code
    )
