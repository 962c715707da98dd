"""Everything a step's connector is given, and the checks around it, assembled in one
place: its credential (read per use, so a rotated or deleted one takes effect at once),
the LLM server, the mail policy bound to the run's owner, and the hooks of its connector
(`JobHooks.step_hooks`: the spend guard before and after an `llm` step)."""

from __future__ import annotations

from typing import Any

import httpx
from cryptography.fernet import MultiFernet

from levqor.config import Settings
from levqor.connectors import llm, safety
from levqor.connectors import service as connectors_service
from levqor.connectors.base import MailPolicy, StepContext
from levqor.db.engine import Database
from levqor.jobs.hooks import JobHooks
from levqor.jobs.queue import Claimed
from levqor.workflows.definition import Step


class StepEnvironment:
    def __init__(
        self,
        db: Database,
        http: httpx.AsyncClient,
        *,
        cipher: MultiFernet,
        settings: Settings,
        hooks: JobHooks,
    ) -> None:
        self.db = db
        self.http = http
        self.cipher = cipher
        self.settings = settings
        self.hooks = hooks
        self.llm = llm.server_from_settings(settings)
        self.allow = safety.AllowList.parse(settings.allow_private_urls)

    def context(self, job: Claimed, step: Step, data: dict[str, Any]) -> StepContext:
        return StepContext(
            http=self.http,
            job_id=job.id,
            step_id=step.id,
            data=data,
            timeout_s=step.timeout_s,
            llm=self.llm,
            mail=self.mail_policy(job.user_id),
            attempt_group=job.replays,
        )

    async def credential(self, job: Claimed, step: Step) -> dict[str, Any] | None:
        if step.credential is None:
            return None
        async with self.db.session(write=False) as session:
            return await connectors_service.for_step(
                session,
                user_id=job.user_id,
                credential_id=step.credential,
                connector=step.connector,
                cipher=self.cipher,
            )

    async def before(self, job: Claimed, step: Step) -> None:
        hooks = self.hooks.step_hooks.get(step.connector)
        if hooks is not None:
            await hooks.before(user_id=job.user_id)

    async def after(self, job: Claimed, step: Step, output: Any) -> None:
        hooks = self.hooks.step_hooks.get(step.connector)
        if hooks is not None:
            await hooks.after(user_id=job.user_id, output=output)

    def mail_policy(self, user_id: str) -> MailPolicy:
        rules = self.hooks.mail_rules

        async def suppressed(address: str, marketing: bool) -> bool:
            return await rules.suppressed(user_id=user_id, address=address, marketing=marketing)

        def unsubscribe_url(address: str) -> str:
            return rules.unsubscribe_url(user_id=user_id, address=address)

        async def vet_host(host: str, port: int) -> str:
            return await safety.check_host(host, port, self.allow)

        return MailPolicy(suppressed, unsubscribe_url, vet_host, self.settings.postal_address)
