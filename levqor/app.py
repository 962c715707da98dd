"""`create_app(settings)`: mounts routers and middleware, nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy.orm import configure_mappers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from levqor import __version__, openapi
from levqor.accounts import api as accounts_api
from levqor.billing import api as billing_api
from levqor.bootstrap import build_runtime
from levqor.compliance import api as compliance_api
from levqor.config import Settings, load_settings
from levqor.connectors import api as connectors_api
from levqor.connectors import netio
from levqor.db import migrate
from levqor.handlers import register_error_handlers
from levqor.jobs import api as jobs_api
from levqor.jobs.processes import WorkerProcesses
from levqor.jobs.scheduler import Scheduler
from levqor.jobs.worker import Worker
from levqor.logging import configure_logging
from levqor.middleware import BodyLimitMiddleware, CatchAllMiddleware, RequestContextMiddleware
from levqor.ops import api as ops_api
from levqor.ops import slo
from levqor.partners import api as partners_api
from levqor.runtime import Runtime, freeze_startup_objects
from levqor.web import accounts as web_accounts
from levqor.web import (
    admin,
    billing_pages,
    csrf,
    dashboard,
    pages,
    partner_pages,
    privacy_pages,
    public,
    seo,
    settings_pages,
)
from levqor.web.csrf import CsrfCookieMiddleware
from levqor.web.security import SecurityHeadersMiddleware
from levqor.web.session import LoginRequired
from levqor.workflows import api as workflows_api


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    """Build the ASGI app. A given `runtime` is shared and closed by its owner."""
    owned = runtime is None
    active = runtime or build_runtime(settings)
    latencies = slo.Recorder()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if settings.check_schema_on_start:
            await _refuse_outdated_schema(settings)
        if owned:
            netio.declare_asyncio()  # before the embedded jobs' tasks, which inherit it
        async with _embedded_jobs(active), slo.flushing(active.db, latencies):
            if owned:  # this process's app (serve, up); one handed a runtime is embedded
                # Its routes use the ORM: its mappers are configured now, with the rest of
                # start-up, not by the first request (no module does it as it loads).
                configure_mappers()
                freeze_startup_objects()
            yield
        if owned:
            await active.close()

    app = FastAPI(
        title="Levqor",
        version=__version__,
        lifespan=lifespan,
        middleware=_middleware(settings, latencies),
        docs_url=None,  # served by web.pages from local assets, under the strict CSP
        redoc_url=None,
    )
    app.state.runtime = active
    app.state.latencies = latencies
    register_error_handlers(app)
    openapi.install(app)
    # First: routes are tried in order, and the webhook is the busiest path. Behind the
    # seven routers before it, matching it took 70 µs (37 patterns), 4.5 µs first.
    app.include_router(jobs_api.hooks_router)
    app.include_router(ops_api.router)
    app.include_router(accounts_api.auth_router)
    app.include_router(accounts_api.router)
    app.include_router(workflows_api.router)
    app.include_router(workflows_api.plan_router)
    app.include_router(connectors_api.router)
    app.include_router(jobs_api.router)
    app.include_router(billing_api.router)
    app.include_router(billing_api.admin_router)
    app.include_router(ops_api.admin_router)
    app.include_router(ops_api.public_router)
    app.include_router(partners_api.router)
    app.include_router(partners_api.admin_router)
    app.include_router(partners_api.link_router)
    app.include_router(pages.router)
    app.include_router(public.router)
    app.include_router(web_accounts.router)
    app.include_router(dashboard.router)
    app.include_router(settings_pages.router)
    app.include_router(privacy_pages.router)
    app.include_router(billing_pages.router)
    app.include_router(partner_pages.router)
    app.include_router(admin.router)
    app.include_router(seo.router)  # last: its /{key}.txt must not shadow robots.txt
    app.add_exception_handler(LoginRequired, dashboard.login_redirect)
    app.add_exception_handler(csrf.FormRefused, csrf.refused_page)
    app.include_router(compliance_api.admin_router)
    app.include_router(compliance_api.me_router)
    app.mount("/static/docs", StaticFiles(directory=pages.DOCS_ASSETS), "docs-assets")
    app.mount("/static", StaticFiles(directory=Path(pages.__file__).parent / "static"), "static")
    return app


def _middleware(settings: Settings, latencies: slo.Recorder) -> list[Middleware]:
    stack = [
        Middleware(RequestContextMiddleware, access_log=settings.access_log),
        Middleware(slo.LatencyMiddleware, recorder=latencies),
        Middleware(
            SecurityHeadersMiddleware,
            hsts_preload=settings.hsts_preload,
            https=settings.public_url.startswith("https://"),
        ),
        Middleware(CsrfCookieMiddleware, secure=settings.public_url.startswith("https://")),
    ]
    if settings.cors_origins:
        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Api-Key"],
                expose_headers=[
                    "X-Request-ID",
                    "X-RateLimit-Limit",
                    "X-RateLimit-Remaining",
                    "X-RateLimit-Reset",
                    "Retry-After",
                ],
            )
        )
    stack += [
        Middleware(CatchAllMiddleware),
        Middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes),
    ]
    return stack


@asynccontextmanager
async def _embedded_jobs(runtime: Runtime) -> AsyncIterator[None]:
    """`levqor up`: the scheduler in the API's own process, and the jobs in worker
    processes beside it (or, with `up_worker_processes` 0, in this process too)."""
    settings = runtime.settings
    if not settings.embedded_jobs:
        yield
        return
    stop = asyncio.Event()
    concurrency = settings.embedded_worker_concurrency
    workers: Worker | WorkerProcesses = (
        WorkerProcesses(
            settings,
            count=settings.up_worker_processes,
            concurrency=concurrency,
            wake=runtime.job_wakeup,
        )
        if settings.up_worker_processes
        else Worker(runtime, concurrency=concurrency)
    )
    tasks = [
        asyncio.create_task(workers.run(stop)),
        asyncio.create_task(Scheduler(runtime).run(stop)),
    ]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def _refuse_outdated_schema(settings: Settings) -> None:
    current = await migrate.current_revision(settings)
    head = migrate.head_revision()
    if current != head:
        raise RuntimeError(
            f"The database schema is at {current or 'nothing'}, this code needs {head}: "
            "run `levqor migrate`."
        )


def app_from_environment() -> FastAPI:
    """Factory for `levqor serve` worker processes: each reads the same environment."""
    settings = load_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    return create_app(settings)
