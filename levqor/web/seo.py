"""IndexNow: tell search engines which public pages changed (the sitemap pings of Google
and Bing were retired in 2023 and 2022).

`levqor seo submit` (and the scheduler, when LEVQOR_INDEXNOW_KEY is set) posts the public
URLs whose `lastmod` moved since IndexNow last accepted them, in one bulk request; the key
is served at `/{key}.txt` so the engines can check the site is ours. A 429 is retried
after its Retry-After (or a doubling wait), a few times; what still fails waits for the
next run.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from levqor import errors
from levqor.config import Settings
from levqor.db.base import upsert, utcnow
from levqor.db.engine import Database
from levqor.deps import RuntimeDep
from levqor.logging import get_logger
from levqor.periodic import TickTask, at_most_every
from levqor.web.models import SeoSubmission
from levqor.web.public import PAGES, PublicPage

router = APIRouter(include_in_schema=False)
log = get_logger("levqor.seo")
ATTEMPTS = 4
FIRST_WAIT_S = 1.0
MAX_WAIT_S = 60.0
TIMEOUT_S = 20.0


class IndexNowOff(errors.LevqorError):
    """IndexNow is off: set LEVQOR_INDEXNOW_KEY (8 to 128 letters, digits or dashes)."""

    status = 409
    code = "indexnow_off"


class IndexNowRefused(errors.LevqorError):
    """IndexNow refused the submission."""

    status = 502
    code = "indexnow_refused"


@dataclass(frozen=True)
class Submitted:
    urls: list[str]
    status: int | None  # IndexNow's answer; None when there was nothing to send


@router.get("/{key}.txt", response_class=PlainTextResponse)
async def key_file(key: str, runtime: RuntimeDep) -> str:
    """The key file IndexNow fetches to check that the submitter owns the site."""
    if runtime.settings.indexnow_key is None or key != runtime.settings.indexnow_key:
        raise errors.NotFound("No such file.")
    return key


def tick_task(db: Database, settings: Settings, *, every_s: float = 3600) -> TickTask:
    """For the scheduler: at most every `every_s`, announce what changed (usually
    nothing: a page's words change with a release)."""

    async def announce_changes() -> object:
        try:
            return await submit(db, settings)
        except IndexNowRefused as exc:
            log.warning("indexnow_failed", error=exc.detail)
            return None

    return at_most_every(every_s, announce_changes)


async def changed(session: AsyncSession, settings: Settings) -> list[PublicPage]:
    """Public pages IndexNow has not accepted at their current `lastmod`."""
    known = {
        url: lastmod
        for url, lastmod in await session.execute(select(SeoSubmission.url, SeoSubmission.lastmod))
    }
    return [page for page in PAGES if known.get(_url(settings, page)) != page.updated]


async def submit(db: Database, settings: Settings, *, everything: bool = False) -> Submitted:
    """Send the changed public URLs (or, with `everything`, all of them) to IndexNow."""
    key = settings.indexnow_key
    if key is None:
        raise IndexNowOff()
    async with db.session(write=False) as session:
        pages = list(PAGES) if everything else await changed(session, settings)
    if not pages:
        return Submitted([], None)
    base = settings.public_url.rstrip("/")
    urls = [_url(settings, page) for page in pages]
    body: dict[str, object] = {
        "host": urlsplit(base).hostname,
        "key": key,
        "keyLocation": f"{base}/{key}.txt",
        "urlList": urls,
    }
    status = await _post(settings.indexnow_url, body)
    async with db.session(write=True) as session, session.begin():
        for page, url in zip(pages, urls, strict=True):
            statement = upsert(session.get_bind().dialect.name, SeoSubmission).values(
                url=url, lastmod=page.updated, submitted_at=utcnow()
            )
            await session.execute(
                statement.on_conflict_do_update(
                    index_elements=["url"],
                    set_={"lastmod": page.updated, "submitted_at": statement.excluded.submitted_at},
                )
            )
    log.info("indexnow_submitted", urls=len(urls), status=status)
    return Submitted(urls, status)


async def _post(endpoint: str, body: dict[str, object]) -> int:
    wait = FIRST_WAIT_S
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                answer = await client.post(
                    endpoint, json=body, headers={"content-type": "application/json; charset=utf-8"}
                )
            except httpx.HTTPError as exc:
                raise IndexNowRefused(f"IndexNow did not answer: {type(exc).__name__}") from exc
            if answer.status_code in (200, 202):
                return answer.status_code
            if answer.status_code != 429 or attempt == ATTEMPTS:
                raise IndexNowRefused(
                    f"IndexNow answered {answer.status_code}: {answer.text[:200]}"
                )
            await asyncio.sleep(min(_retry_after(answer) or wait, MAX_WAIT_S))
            wait *= 2
    raise AssertionError("unreachable")  # pragma: no cover


def _retry_after(answer: httpx.Response) -> float | None:
    try:
        return max(0.0, float(answer.headers.get("retry-after", "")))
    except ValueError:
        return None


def _url(settings: Settings, page: PublicPage) -> str:
    return settings.public_url.rstrip("/") + page.path
