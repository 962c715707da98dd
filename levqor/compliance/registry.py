"""Every table, classified for GDPR export (Art. 15/20) and erasure (Art. 17).

A table holding personal data says how its rows reach a user: through a column holding
the user's id (`Owned`) or through a parent table's rows (`Via`). The rest say why they
hold none (`NotPersonal`). A test fails when a table is added without an entry here, so
new personal data cannot slip past export and erasure.

Erasure deletes the user row and lets foreign keys cascade to everything `Owned` or
`Via` marked `erase="cascade"`; `keep` rows stay, pseudonymous (they name only the random
user id, never an address or a name); `pseudonymise` rows stay with the user id replaced
by the erasure's random tombstone id (money records that tax law keeps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Erase = Literal["cascade", "keep", "pseudonymise", "by_account_key"]


@dataclass(frozen=True)
class Owned:
    column: str
    erase: Erase = "cascade"
    why_kept: str = ""
    # Other columns naming the user: rows about them that someone else wrote (an admin
    # or the system acting on their account). Exported with the rest; erasure goes by
    # `column` alone.
    about: tuple[str, ...] = ()


@dataclass(frozen=True)
class Via:
    parent: str
    column: str  # this table's column pointing at the parent's `parent_key`
    parent_key: str = "id"
    erase: Erase = "cascade"


@dataclass(frozen=True)
class NotPersonal:
    why: str


Rule = Owned | Via | NotPersonal

_TAX = "accounting record kept for tax law; the user id becomes a tombstone id"

TABLES: dict[str, Rule] = {
    "users": Owned("id"),
    "api_keys": Owned("user_id"),
    "token_families": Owned("user_id"),
    "refresh_tokens": Via("token_families", "family_id"),
    "revoked_access_tokens": Owned("user_id"),
    "login_failures": Owned("account_key", erase="by_account_key"),
    "idempotency_keys": Owned("user_id"),
    "workflows": Owned("user_id"),
    "workflow_versions": Via("workflows", "workflow_id"),
    "schedule_fires": Via("workflows", "workflow_id"),
    "jobs": Owned("user_id"),
    "job_steps": Via("jobs", "job_id"),
    "workers": NotPersonal("worker processes: host names, process ids, heartbeats"),
    "seo_submissions": NotPersonal("public page URLs announced to search engines"),
    "social_accounts": NotPersonal("the operator's own social channel and its token"),
    "social_posts": NotPersonal("the operator's own social posts"),
    "revenue_snapshots": NotPersonal("daily totals of the whole business"),
    "alerts": NotPersonal("the operator's alerts about the service"),
    "alert_deliveries": NotPersonal("where each alert went"),
    "request_stats": NotPersonal("counts and latencies of API requests, no request data"),
    "slo_checks": NotPersonal("the SLO verdict each minute"),
    "backups": NotPersonal("the catalogue of backups"),
    "anomalies": NotPersonal("hourly totals that looked wrong"),
    "callback_secrets": Owned("user_id"),
    "callback_deliveries": Owned("user_id"),
    "callback_attempts": Via("callback_deliveries", "delivery_id"),
    "credentials": Owned("user_id"),
    "llm_usage": Owned("user_id"),
    "email_suppressions": Owned("user_id"),
    "consents": Owned("user_id"),
    "data_exports": Owned("user_id"),
    "credit_ledger": Owned("user_id", erase="pseudonymise", why_kept=_TAX),
    "billing_customers": Owned("user_id"),
    "subscriptions": Owned("user_id"),
    "payments": Owned("user_id", erase="pseudonymise", why_kept=_TAX),
    "invoices": Owned("user_id", erase="pseudonymise", why_kept=_TAX),
    "refunds": Owned("user_id", about=("issued_by",), erase="pseudonymise", why_kept=_TAX),
    "refund_requests": Owned(
        "user_id", about=("requested_by",), erase="pseudonymise", why_kept=_TAX
    ),
    "disputes": Owned("user_id", erase="pseudonymise", why_kept=_TAX),
    "spend_pauses": Owned("user_id"),
    "stripe_events": NotPersonal("event ids and types only; the events' contents are not kept"),
    "partners": Owned("user_id"),
    "referral_clicks": Via("partners", "partner_id"),
    "referrals": Owned("user_id"),
    "commissions": Owned("user_id", erase="pseudonymise", why_kept=_TAX),
    "payouts": Owned("user_id", erase="pseudonymise", why_kept=_TAX),
    "audit_log": Owned(
        "actor",
        about=("object_id",),
        erase="keep",
        why_kept="security and accounting record (legitimate interest); names only the "
        "random user id",
    ),
}

# Never exported: secrets and their hashes are no one's personal data to take away, and a
# built export is only a copy of the rest.
SECRET_COLUMNS = frozenset(
    {
        "password_hash",
        "key_hash",
        "token_hash",
        "webhook_token_hash",
        "webhook_token_encrypted",
        "secret_encrypted",
        "response_encrypted",
        "account_key",
        "request_hash",
        "email_index",
        "document_encrypted",
    }
)

ABOUT = {
    "controller": "the operator of this Levqor server",
    "purposes": [
        "running the automations you define (workflows, runs, their inputs and outputs)",
        "keeping your account secure (logins, keys, the audit log)",
        "billing for runs (credits, usage of AI models), payments, invoices and refunds",
        "the partner program: referral clicks (a keyed hash of the IP address), signups "
        "and commissions",
        "sending e-mail you asked for, and product news only with your consent",
    ],
    "recipients": [
        "the services your workflow steps call (Slack, Telegram, e-mail servers, ...)",
        "the LLM provider configured for the AI planner and AI steps",
        "Stripe, for payments (your e-mail address, as the paying customer) and partner payouts",
        "the e-mail provider that delivers account mail",
    ],
    "retention": {
        "runs": "kept for the job retention period (LEVQOR_JOB_RETENTION_DAYS), then deleted",
        "account": "until you delete it",
        "audit log": "kept after deletion, pseudonymous (no name, no e-mail)",
        "credit ledger, payments, invoices, refunds, commissions and payouts": "kept after "
        "deletion as long as tax law requires (typically 10 years), under a random "
        "tombstone id instead of your user id",
        "partner program": "your code, clicks and referrals are deleted with your account",
    },
    "rights": [
        "access and portability: this export (GET /api/v1/me/export)",
        "erasure: DELETE /api/v1/me",
        "rectification: change your profile, or ask the operator",
        "objection and withdrawing consent: unsubscribe links, account settings",
        "complaint: your data protection authority",
    ],
}
