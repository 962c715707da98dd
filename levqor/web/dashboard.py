"""The user's dashboard (`/app`): workflows from words, runs with live status.

Every page takes "whose objects" from `session.Owner`, never from scattered user reads.
"""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from starlette.background import BackgroundTask

from levqor import errors
from levqor.deps import Cursor, ReadSessionDep, RuntimeDep, SessionDep
from levqor.jobs import service as jobs
from levqor.jobs.models import FINAL_STATES
from levqor.jobs.schemas import RunIn
from levqor.web import csrf
from levqor.web.public import readable
from levqor.web.rendering import redirect, render
from levqor.web.session import LoginRequired, Owner
from levqor.workflows import planner, preflight
from levqor.workflows import service as workflows
from levqor.workflows.definition import InvalidDefinition, WorkflowDefinition
from levqor.workflows.planner import service as planner_service
from levqor.workflows.schemas import PlanIn

router = APIRouter(prefix="/app", include_in_schema=False)
Csrf = Annotated[None, Depends(csrf.verify)]
MAX_DEFINITION_CHARS = 64 * 1024
RUNS_PAGE = 50


def login_redirect(request: Request, exc: Exception) -> Response:
    """The handler of `LoginRequired`: to the login page, back here afterwards."""
    assert isinstance(exc, LoginRequired)
    return redirect(request, f"/login?next={quote(exc.path)}")


def not_found(request: Request, what: str) -> HTMLResponse:
    return render(request, "not_found.html", {"what": what, "noindex": True}, status_code=404)


@router.get("", response_class=HTMLResponse)
async def home(request: Request, owner: Owner, session: ReadSessionDep) -> HTMLResponse:
    states, _ = await workflows.list_for_user(session, user=owner, limit=50)
    runs, _ = await jobs.list_for_user(session, user=owner, limit=10)
    names = {state.workflow.id: state.workflow.name for state in states}
    return render(
        request,
        "app.html",
        {"user": owner, "workflows": states, "runs": runs, "names": names, "noindex": True},
    )


@router.get("/workflows/new", response_class=HTMLResponse)
async def new_workflow(request: Request, _owner: Owner) -> HTMLResponse:
    return render(request, "workflow_new.html", {"noindex": True})


@router.post("/workflows/draft", response_class=HTMLResponse)
async def draft(
    request: Request,
    _csrf: Csrf,
    owner: Owner,
    session: SessionDep,
    runtime: RuntimeDep,
    prompt: Annotated[str, Form(min_length=3, max_length=2000)],
) -> HTMLResponse:
    """Words -> a draft to review: readable steps, and the definition that will be saved.
    Details the request left out are asked at their step (`answer.<name>` fields); the
    draft can be saved once they are given."""
    context: dict[str, Any] = {"prompt": prompt, "noindex": True}
    try:
        answers = PlanIn(prompt=prompt, answers=_answers(await request.form())).answers
        drafted = await planner_service.plan(
            session, settings=runtime.settings, user=owner, prompt=prompt
        )
    except ValidationError as exc:
        context["problem"] = "; ".join(error["msg"] for error in exc.errors())
        return render(request, "workflow_new.html", context, status_code=422)
    except errors.LevqorError as exc:
        context["problem"] = exc.detail
        return render(request, "workflow_new.html", context, status_code=exc.status)
    status, answer_errors = 200, {}
    try:
        drafted = planner.answer(drafted, answers)
    except InvalidDefinition as exc:  # the answers stay in their fields, the error beside
        status, answer_errors = 422, _answer_errors(drafted, exc)
    context |= {
        "warnings": await preflight.warnings(
            session, user=owner, definition=drafted.definition, settings=runtime.settings
        ),
        "draft": readable(drafted.definition, drafted.inputs),
        "asking": {needed.name for needed in drafted.inputs},
        "answers": answers,
        "answer_errors": answer_errors,
        "notes": [*drafted.notes, *drafted.not_understood],
        "definition": json.dumps(drafted.definition, indent=2, ensure_ascii=False),
    }
    return render(request, "workflow_new.html", context, status_code=status)


def _answers(form: Any) -> dict[str, str]:
    return {
        key.removeprefix("answer."): str(value)
        for key, value in form.multi_items()
        if key.startswith("answer.")
    }


def _answer_errors(plan: planner.Plan, exc: InvalidDefinition) -> dict[str, str]:
    """Each error of a refused answer, at the input it came from."""
    index = {step["id"]: n for n, step in enumerate(plan.definition["steps"])}
    found: dict[str, str] = {}
    for needed in plan.inputs:
        at = f"definition.steps[{index[needed.step]}].params.{needed.param}"
        for error in exc.extra.get("errors", []):
            if error["field"] == at or error["field"].startswith((at + ".", at + "[")):
                found.setdefault(needed.name, error["message"])
    return found or {plan.inputs[0].name: exc.detail}


@router.post("/workflows", response_class=HTMLResponse)
async def save(
    request: Request,
    _csrf: Csrf,
    owner: Owner,
    session: SessionDep,
    runtime: RuntimeDep,
    definition: Annotated[str, Form(max_length=MAX_DEFINITION_CHARS)],
) -> Response:
    """Save a reviewed (or hand-edited) definition as a new workflow."""
    try:
        parsed = WorkflowDefinition.model_validate_json(definition)
        state = await workflows.create(
            session, user=owner, definition=parsed, cipher=runtime.cipher
        )
    except ValidationError as exc:
        problems = [
            f"{'.'.join(map(str, e['loc'])) or 'definition'}: {e['msg']}" for e in exc.errors()
        ]
        context = {"definition": definition, "problems": problems, "noindex": True}
        return render(request, "workflow_new.html", context, status_code=422)
    except errors.LevqorError as exc:
        context = {"definition": definition, "problems": [exc.detail], "noindex": True}
        return render(request, "workflow_new.html", context, status_code=exc.status)
    return redirect(request, f"/app/workflows/{state.workflow.id}")


@router.get("/workflows/{workflow_id}", response_class=HTMLResponse)
async def workflow_page(
    request: Request, workflow_id: str, owner: Owner, session: ReadSessionDep, runtime: RuntimeDep
) -> HTMLResponse:
    try:
        context = await _workflow_context(session, owner, runtime, workflow_id)
    except errors.NotFound:
        return not_found(request, "workflow")
    return render(request, "workflow.html", context)


async def _workflow_context(
    session: Any, owner: Any, runtime: Any, workflow_id: str
) -> dict[str, Any]:
    state = await workflows.get_state(session, user=owner, workflow_id=workflow_id)
    runs, _ = await jobs.list_for_user(session, user=owner, workflow_id=workflow_id, limit=20)
    _workflow, versions, _ = await workflows.list_versions(
        session, user=owner, workflow_id=workflow_id, limit=20
    )
    webhook_url = None
    if state.workflow.trigger_type == "webhook":
        token = workflows.webhook_token(state.workflow, runtime.cipher)
        webhook_url = f"{runtime.settings.public_url}/hooks/{state.workflow.id}/{token}"
    schedule = None
    if state.workflow.trigger_type == "schedule":
        schedule = {
            "enabled": state.workflow.schedule_enabled,
            "paused": state.workflow.schedule_paused_reason is not None,
            "paused_reason": state.workflow.schedule_paused_reason,
        }
    return {
        "workflow": state.workflow,
        "version": state.current.version,
        "schedule": schedule,
        "draft": readable(state.current.definition),
        "warnings": await preflight.warnings(
            session, user=owner, definition=state.current.definition, settings=runtime.settings
        ),
        "webhook_url": webhook_url,
        "runs": runs,
        "versions": versions,
        "definition": json.dumps(state.current.definition, indent=2, ensure_ascii=False),
        "noindex": True,
    }


@router.post("/workflows/{workflow_id}/schedule")
async def switch_schedule(
    request: Request,
    workflow_id: str,
    _csrf: Csrf,
    owner: Owner,
    session: SessionDep,
    enabled: Annotated[bool, Form()],
) -> Response:
    """Turn the schedule off, or on again (which also resumes an automatic pause)."""
    try:
        await workflows.switch_schedule(
            session, user=owner, workflow_id=workflow_id, enabled=enabled
        )
    except errors.NotFound:
        return not_found(request, "workflow")
    except errors.Conflict as exc:
        await session.rollback()
        runtime = request.app.state.runtime
        context = await _workflow_context(session, owner, runtime, workflow_id)
        context["problem"] = exc.detail
        return render(request, "workflow.html", context, status_code=exc.status)
    return redirect(request, f"/app/workflows/{workflow_id}#schedule")


@router.post("/workflows/{workflow_id}/versions", response_class=HTMLResponse)
async def new_version(
    request: Request,
    workflow_id: str,
    _csrf: Csrf,
    owner: Owner,
    session: SessionDep,
    definition: Annotated[str, Form(max_length=MAX_DEFINITION_CHARS)],
) -> Response:
    """The definition edited as JSON becomes the next version; errors are shown at their
    path, and nothing is saved."""
    try:
        parsed = WorkflowDefinition.model_validate_json(definition)
        await workflows.update(session, user=owner, workflow_id=workflow_id, definition=parsed)
    except errors.NotFound:
        return not_found(request, "workflow")
    except ValidationError as exc:
        problems = [_at(error["loc"]) + error["msg"] for error in exc.errors()]
        return await _edit_refused(request, session, owner, workflow_id, definition, problems, 422)
    except errors.LevqorError as exc:
        return await _edit_refused(
            request, session, owner, workflow_id, definition, [exc.detail], exc.status
        )
    return redirect(request, f"/app/workflows/{workflow_id}")


async def _edit_refused(
    request: Request,
    session: Any,
    owner: Any,
    workflow_id: str,
    definition: str,
    problems: list[str],
    status: int,
) -> HTMLResponse:
    """The workflow's page again, the edit kept in its box and the errors beside it."""
    await session.rollback()  # nothing of the refused version stays
    runtime = request.app.state.runtime
    context = await _workflow_context(session, owner, runtime, workflow_id)
    context |= {"definition": definition, "problems": problems}
    return render(request, "workflow.html", context, status_code=status)


@router.post("/workflows/{workflow_id}/rollback")
async def rollback(
    request: Request,
    workflow_id: str,
    _csrf: Csrf,
    owner: Owner,
    session: SessionDep,
    version: Annotated[int, Form(ge=1)],
) -> Response:
    try:
        await workflows.rollback(session, user=owner, workflow_id=workflow_id, version=version)
    except errors.NotFound:
        return not_found(request, "workflow or version")
    return redirect(request, f"/app/workflows/{workflow_id}")


@router.post("/workflows/{workflow_id}/webhook")
async def rotate_webhook(
    request: Request,
    workflow_id: str,
    _csrf: Csrf,
    owner: Owner,
    session: SessionDep,
    runtime: RuntimeDep,
) -> Response:
    """A new webhook URL; the old one stops working at once."""
    try:
        await workflows.rotate_webhook_token(
            session, user=owner, workflow_id=workflow_id, cipher=runtime.cipher
        )
    except errors.NotFound:
        return not_found(request, "workflow")
    return redirect(request, f"/app/workflows/{workflow_id}#webhook")


@router.post("/workflows/{workflow_id}/runs")
async def run_now(
    request: Request,
    workflow_id: str,
    _csrf: Csrf,
    owner: Owner,
    session: SessionDep,
    runtime: RuntimeDep,
    input: Annotated[str, Form(max_length=MAX_DEFINITION_CHARS)] = "{}",
) -> Response:
    try:
        payload = json.loads(input or "{}")
    except json.JSONDecodeError:
        payload = {"text": input}
    try:  # the same door as the API: no NaN, no integer past 64 bits
        payload = RunIn(input=payload).input
    except ValidationError as exc:
        context = await _workflow_context(session, owner, runtime, workflow_id)
        context["problem"] = f"The input cannot be stored: {exc.errors()[0]['msg']}"
        return render(request, "workflow.html", context, status_code=422)
    try:
        job = await jobs.start_run(
            session,
            user=owner,
            workflow_id=workflow_id,
            input=payload,
            cost=runtime.settings.run_cost_credits,
        )
    except errors.NotFound:
        return not_found(request, "workflow")
    except errors.PaymentRequired as exc:
        context = {"problem": exc.detail, "noindex": True}
        return render(request, "no_credits.html", context, status_code=exc.status)
    response = redirect(request, f"/app/runs/{job.id}")
    # After the commit (a background task runs once the response is sent).
    response.background = BackgroundTask(runtime.job_wakeup.set)
    return response


@router.get("/runs", response_class=HTMLResponse)
async def runs_page(
    request: Request, owner: Owner, session: ReadSessionDep, cursor: Cursor = None
) -> HTMLResponse:
    """Every run, newest first, a page at a time; the table follows live runs."""
    return await _runs(request, owner, session, cursor, "runs.html")


@router.get("/runs/table", response_class=HTMLResponse)
async def runs_table(
    request: Request, owner: Owner, session: ReadSessionDep, cursor: Cursor = None
) -> HTMLResponse:
    return await _runs(request, owner, session, cursor, "_runs_table.html")


async def _runs(
    request: Request, owner: Any, session: Any, cursor: str | None, template: str
) -> HTMLResponse:
    runs, next_cursor = await jobs.list_for_user(
        session, user=owner, limit=RUNS_PAGE, cursor=cursor
    )
    states, _ = await workflows.list_for_user(session, user=owner, limit=200)
    return render(
        request,
        template,
        {
            "runs": runs,
            "names": {state.workflow.id: state.workflow.name for state in states},
            "cursor": cursor,
            "next_cursor": next_cursor,
            "live": any(job.status not in FINAL_STATES for job in runs),
            "noindex": True,
        },
    )


@router.get("/dead-letters", response_class=HTMLResponse)
async def dead_letters(
    request: Request, owner: Owner, session: ReadSessionDep, replayed: int | None = None
) -> HTMLResponse:
    """Failed runs (the dead-letter queue), to replay in bulk from their failed step."""
    failed, _ = await jobs.list_for_user(session, user=owner, status="failed", limit=200)
    states, _ = await workflows.list_for_user(session, user=owner, limit=200)
    context = {
        "runs": failed,
        "names": {state.workflow.id: state.workflow.name for state in states},
        "replayed": replayed,
        "noindex": True,
    }
    return render(request, "dead_letters.html", context)


@router.post("/dead-letters/replay")
async def replay_dead_letters(
    request: Request,
    _csrf: Csrf,
    owner: Owner,
    session: SessionDep,
    runtime: RuntimeDep,
    job_ids: Annotated[list[str], Form(max_length=200)] = [],  # noqa: B006  copied per request
) -> Response:
    """Replay the chosen failed runs; any that are no longer failed are left alone."""
    replayed = 0
    for job_id in job_ids:
        try:
            await jobs.retry(session, user=owner, job_id=job_id)
        except (errors.NotFound, errors.Conflict):
            continue
        replayed += 1
    response = redirect(request, f"/app/dead-letters?replayed={replayed}")
    response.background = BackgroundTask(runtime.job_wakeup.set)
    return response


@router.get("/runs/{job_id}", response_class=HTMLResponse)
async def run_page(
    request: Request, job_id: str, owner: Owner, session: ReadSessionDep
) -> HTMLResponse:
    return await _run(request, job_id, owner, session, "run.html")


@router.post("/runs/{job_id}/cancel")
async def cancel_run(
    request: Request, job_id: str, _csrf: Csrf, owner: Owner, session: SessionDep
) -> Response:
    return await _act(request, job_id, owner, session, jobs.cancel)


@router.post("/runs/{job_id}/retry")
async def retry_run(
    request: Request, job_id: str, _csrf: Csrf, owner: Owner, session: SessionDep
) -> Response:
    return await _act(request, job_id, owner, session, jobs.retry)


async def _act(request: Request, job_id: str, owner: Any, session: Any, action: Any) -> Response:
    """Cancel or retry a run, then back to its page (which says why, if it could not)."""
    try:
        await action(session, user=owner, job_id=job_id)
    except errors.NotFound:
        return not_found(request, "run")
    except errors.LevqorError as exc:
        context = await _run_context(session, owner, job_id)
        return render(
            request, "run.html", {**context, "problem": exc.detail}, status_code=exc.status
        )
    response = redirect(request, f"/app/runs/{job_id}")
    response.background = BackgroundTask(request.app.state.runtime.job_wakeup.set)
    return response


@router.get("/runs/{job_id}/status", response_class=HTMLResponse)
async def run_status(
    request: Request, job_id: str, owner: Owner, session: ReadSessionDep
) -> HTMLResponse:
    """The run's live part, polled by htmx until the run is final."""
    return await _run(request, job_id, owner, session, "_run_status.html")


async def _run(
    request: Request, job_id: str, owner: Any, session: Any, template: str
) -> HTMLResponse:
    try:
        context = await _run_context(session, owner, job_id)
    except errors.NotFound:
        return not_found(request, "run")
    return render(request, template, context)


async def _run_context(session: Any, owner: Any, job_id: str) -> dict[str, Any]:
    detail = await jobs.get(session, user=owner, job_id=job_id)
    return {
        "job": detail.job,
        "steps": detail.steps,
        "inputs": await jobs.step_inputs(session, detail),
        "final": detail.job.status in FINAL_STATES,
        "noindex": True,
    }


def _at(location: tuple[int | str, ...]) -> str:
    """Where in the definition an error is, as a person reads it: `steps.1.params: `."""
    return ".".join(map(str, location)) + ": " if location else ""
