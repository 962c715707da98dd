"""Settings: the only module that reads the environment.

`load_settings()` is called once by an entry point (CLI command, app factory) and the
result is passed down. Secrets that are not configured are generated on first start into
`<data_dir>/secrets.json` (mode 0600) and read back on every later start, so every process
sharing a data directory signs and encrypts with the same keys.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from cryptography.fernet import Fernet
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "secret", "password", "test", "dev"})
MIN_SECRET_LENGTH = 32
# OWASP's argon2id configurations all satisfy memory * time >= 7 MiB * 5.
ARGON2_MIN_MEMORY_KIB = 7168
ARGON2_MIN_WORK = 7168 * 5


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LEVQOR_", env_file=".env", extra="ignore", frozen=True
    )

    data_dir: Path = Path("levqor-data")
    public_url: str = "http://127.0.0.1:8000"
    database_url: str | None = None
    redis_url: str | None = None
    redis_key_prefix: str = "levqor:"
    redis_timeout_s: float = 0.25
    redis_retry_interval_s: float = 1.0
    redis_max_connections: int = Field(64, ge=1)
    sqlite_busy_timeout_ms: int = 5000
    # FULL: a run answered 202 survives a power cut (each commit is synced to disk).
    # NORMAL: faster commits; a power cut (not a crash of Levqor) can lose the last ones.
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    db_pool_size: int = 10

    allow_private_urls: CommaList = Field(default_factory=list)
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_model: str | None = None
    # USD per million tokens, [input, output], by model: LLM costs are recorded in
    # micro-dollars from this table (a model not listed costs 0 and is logged).
    llm_prices: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {
            "gpt-4o-mini": (0.15, 0.60),
            "gpt-4o": (2.50, 10.00),
            "gpt-4.1-mini": (0.40, 1.60),
            "gpt-4.1": (2.00, 8.00),
        }
    )
    stripe_secret_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str | None = None
    # Stripe price id -> plan name (JSON), for prices whose lookup key is not the plan's
    # name: how an invoice or a plan changed in the portal is known to bill that plan.
    stripe_price_plans: dict[str, str] = Field(default_factory=dict)
    # Seconds to wait for one Stripe call (the SDK tries three times, same key).
    stripe_timeout_s: float = Field(30.0, gt=0, le=300)
    billing_currency: str = Field("usd", pattern="^[a-z]{3}$")
    # LLM spend a day (micro-dollars) past which the spend guard pauses LLM calls until
    # the next UTC midnight: per user, and for the whole server; 0 turns a guard off.
    spend_guard_user_daily_micro_usd: int = Field(5_000_000, ge=0)
    spend_guard_daily_micro_usd: int = Field(50_000_000, ge=0)
    # Costs report: Stripe's fee per payment (estimate) and the servers' monthly bill.
    stripe_fee_bp: int = Field(290, ge=0, le=10_000)
    stripe_fee_fixed_cents: int = Field(30, ge=0)
    infra_monthly_cents: int = Field(0, ge=0)
    partner_commission_bp: int = Field(2000, ge=0, le=10_000)
    partner_hold_days: int = Field(30, ge=0)
    # Commission is earned on a referred customer's payments for this many (30-day)
    # months from their first payment; 0: for as long as they pay.
    partner_commission_months: int = Field(12, ge=0)
    partner_payout_minimum_cents: int = Field(5000, ge=1)
    partner_cookie_days: int = Field(30, ge=1)
    # The day of the month (UTC) the scheduler pays partners; 0: only by hand.
    partner_payout_day: int = Field(1, ge=0, le=28)
    # The fraud guard's score at which a referral is flagged and its commissions held
    # for review (see levqor/partners/fraud.py for the signals); 0 turns it off.
    partner_fraud_threshold: int = Field(50, ge=0)
    metrics_token: SecretStr | None = None

    rate_limit_per_minute: int = Field(60, ge=1)
    rate_limit_auth_per_minute: int = Field(20, ge=1)
    rate_limit_webhook_per_minute: int = Field(600, ge=1)
    rate_limit_plans: dict[str, int] = Field(default_factory=dict)
    rate_limit_routes: dict[str, int] = Field(default_factory=dict)
    free_credits: int = Field(50, ge=0)
    run_cost_credits: int = Field(1, ge=0)
    max_running_jobs_per_user: int = Field(10, ge=1)
    # Intake back-pressure (jobs/intake.py): one user may have this many seconds of the
    # workers' drain waiting (0: no limit), never fewer than `intake_min_backlog` runs.
    intake_backlog_s: float = Field(2, ge=0, le=3600)
    intake_min_backlog: int = Field(200, ge=1, le=1_000_000)
    job_lease_s: float = Field(30, gt=0)
    # Workers beat this often; one silent for two beats is taken for dead and its jobs
    # are requeued (the lease is the fallback for a worker that never beat).
    worker_heartbeat_s: float = Field(2, gt=0)
    # A job whose worker crashed on it, or died holding it, this many times fails into
    # the dead-letter queue instead of being tried again: a poison job stops somewhere.
    job_max_crashes: int = Field(5, ge=1, le=100)
    # Templates that loop, call or multiply render in child processes: this many per
    # worker process, each limited to this much memory and time.
    template_sandboxes: int = Field(2, ge=1, le=64)
    template_memory_mb: int = Field(256, ge=32)
    template_timeout_s: float = Field(10, gt=0, le=300)
    worker_poll_interval_s: float = Field(1.0, gt=0)
    worker_shutdown_timeout_s: float = Field(25, ge=0)
    callback_max_attempts: int = Field(8, ge=1, le=20)
    callback_backoff_s: float = Field(5, gt=0)
    callback_timeout_s: float = Field(10, gt=0, le=60)
    scheduler_interval_s: float = Field(5, gt=0)
    # A workflow's schedule pauses after this many failed fires in a row.
    schedule_pause_after_failures: int = Field(5, ge=1)
    upkeep_interval_s: float = Field(3600, gt=0)
    job_retention_days: int = Field(30, ge=1)
    export_inline_max_rows: int = Field(5000, ge=0)
    export_link_ttl_s: int = Field(24 * 3600, ge=60)
    postal_address: str | None = None
    # The server's own mail (password resets, alerts): unset, no mail is sent.
    # One URL for all of them (`smtp://user:pass@host:587`, STARTTLS; `smtps://…:465`,
    # TLS), as API.md names it; the separate settings below win where both are set.
    smtp_url: SecretStr | None = None
    smtp_host: str | None = None
    smtp_port: int | None = Field(None, gt=0, lt=65536)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: Literal["starttls", "ssl", "none"] = "starttls"
    mail_from: str | None = None
    password_reset_ttl_s: int = Field(3600, ge=300, le=24 * 3600)
    # IndexNow: unset, changed public pages are not announced to search engines.
    indexnow_key: str | None = Field(None, pattern=r"^[a-zA-Z0-9-]{8,128}$")
    indexnow_url: str = "https://api.indexnow.org/indexnow"
    # Buffer's GraphQL API, for `levqor social post` (its token is stored encrypted by
    # `levqor social connect`).
    buffer_url: str = Field(
        "https://api.buffer.com",
        # API.md's name first; LEVQOR_BUFFER_URL, its first name here, still works.
        validation_alias=AliasChoices("buffer_url", "LEVQOR_BUFFER_API_BASE", "LEVQOR_BUFFER_URL"),
    )

    # Alerts (`levqor.ops.alerts`): each channel is on when its settings are.
    alert_telegram_bot_token: SecretStr | None = None
    alert_telegram_chat_id: str | None = None
    alert_telegram_api_base: str = "https://api.telegram.org"
    alert_slack_webhook_url: SecretStr | None = None
    alert_email_to: str | None = None  # through LEVQOR_SMTP_* and LEVQOR_MAIL_FROM
    alert_webhook_url: str | None = None
    alert_webhook_secret: SecretStr | None = None  # whsec_…: Standard Webhooks signature
    # The same alert (severity, title, body) again within this window is counted, not sent.
    alert_dedupe_s: int = Field(3600, ge=0)
    alert_max_attempts: int = Field(8, ge=1, le=50)
    alert_timeout_s: float = Field(10, gt=0, le=60)
    # What the watchdog alerts on: a job waiting longer than this; dead letters summed
    # over windows of this length.
    alert_queue_age_s: int = Field(600, ge=10)
    alert_dead_letter_window_s: int = Field(300, ge=60)

    # The API's SLO (`levqor.ops.slo`): p95 latency and share of 5xx over a sliding window;
    # this many breaching checks in a row (one a minute) raise an alert.
    slo_p95_ms: float = Field(200, gt=0)
    slo_error_rate: float = Field(0.01, ge=0, le=1)
    slo_window_s: int = Field(300, ge=30, le=24 * 3600)
    slo_breach_checks: int = Field(3, ge=1, le=60)
    slo_min_requests: int = Field(20, ge=1)  # fewer in the window: too few to judge

    # Backups (`levqor backup …`, nightly by the scheduler, each verified by a restore
    # into a scratch database).
    backups_enabled: bool = True  # false: the scheduler takes none (take them yourself)
    backup_dir: Path | None = None  # unset: <data_dir>/backups
    backup_keep: int = Field(30, ge=1)
    backup_interval_s: int = Field(24 * 3600, ge=60)
    # true: the database file of each backup is sealed with the key ring (off-site copies
    # then hold nothing readable). With a passphrase, the generated keys in a backup are
    # sealed with it; keep it apart from the backups.
    backup_encrypt: bool = False
    backup_passphrase: SecretStr | None = None
    # Off-site copies of each backup: an S3-compatible bucket (`s3://bucket/prefix`,
    # credentials the AWS way) and/or any rclone remote (`gdrive:levqor-backups`).
    backup_s3_url: str | None = Field(None, pattern=r"^s3://[^/]+(/.*)?$")
    backup_s3_endpoint_url: str | None = None
    backup_rclone_remote: str | None = None
    # Automatic rollback (`levqor.ops.rollback`): a version that went live within the
    # window, with this many finished runs, failing at this rate (and clearly worse than
    # the version before it) is replaced by the version before it.
    rollback_window_s: int = Field(3600, ge=60)
    rollback_min_runs: int = Field(5, ge=1)
    rollback_failure_rate: float = Field(0.5, gt=0, le=1)
    # false: this process counts nothing (to measure what the metrics cost).
    metrics_enabled: bool = True
    # Set by `levqor serve` for its processes (prometheus-client's multi-process mode):
    # each process writes its counters there and /metrics adds them up.
    prometheus_multiproc_dir: Path | None = Field(None, validation_alias="PROMETHEUS_MULTIPROC_DIR")

    jwt_secret: SecretStr | None = None
    # Keys the blind index of e-mail addresses (suppression list, later logins): an
    # HMAC, so the stored hashes cannot be reversed by hashing a list of addresses.
    blind_index_key: SecretStr | None = None
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    jwt_leeway_s: int = Field(10, ge=0, le=30)
    access_token_ttl_s: int = Field(900, ge=60)
    refresh_token_ttl_s: int = Field(7 * 24 * 3600, ge=300)
    refresh_reuse_grace_s: int = Field(10, ge=0, le=60)
    encryption_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    argon2_memory_kib: int = 19456
    argon2_time_cost: int = 2
    argon2_parallelism: int = Field(1, ge=1)
    login_max_failures: int = Field(5, ge=1)
    login_lockout_window_s: int = Field(900, ge=1)

    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    hsts_preload: bool = False
    cors_origins: CommaList = Field(default_factory=list)
    forwarded_allow_ips: str = "127.0.0.1"
    log_level: str = "INFO"
    log_json: bool = True
    access_log: bool = True
    check_schema_on_start: bool = True
    embedded_jobs: bool = False
    # A worker under `up` waits on SQLite commits more than on its core: 32 jobs at once
    # share each commit (8: 190 runs/s, 16: 285, 32: 365, 48: 315; docs/sizing.md).
    embedded_worker_concurrency: int = Field(32, ge=1)
    # `levqor up` runs its jobs in this many worker processes beside the API (0: in the
    # API's own process, for one core).
    up_worker_processes: int = Field(1, ge=0, le=16)

    @model_validator(mode="before")
    @classmethod
    def _smtp_from_url(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("smtp_url"):
            return data
        raw = data["smtp_url"]
        parts = urlsplit(raw.get_secret_value() if isinstance(raw, SecretStr) else str(raw))
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("LEVQOR_SMTP_URL is smtp://user:password@host:port or smtps://…")
        found = {
            "smtp_host": parts.hostname,
            "smtp_port": parts.port,
            "smtp_username": unquote(parts.username) if parts.username else None,
            "smtp_password": unquote(parts.password) if parts.password else None,
            "smtp_security": "ssl" if parts.scheme == "smtps" else "starttls",
        }
        return {**{k: v for k, v in found.items() if v is not None}, **data}

    @field_validator("allow_private_urls", "cors_origins", "encryption_keys", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("jwt_secret")
    @classmethod
    def _strong_jwt_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _refuse_weak_secret("LEVQOR_JWT_SECRET", value.get_secret_value())
        return value

    @field_validator("encryption_keys")
    @classmethod
    def _valid_fernet_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        for key in keys:
            try:
                Fernet(key.get_secret_value())
            except ValueError as exc:
                raise ValueError("LEVQOR_ENCRYPTION_KEYS must be Fernet keys") from exc
        return keys

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, url: str | None) -> str | None:
        if url is None:
            return None
        for plain, driver in (
            ("postgresql://", "postgresql+asyncpg://"),
            ("postgres://", "postgresql+asyncpg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if url.startswith(plain):
                return driver + url[len(plain) :]
        return url

    @model_validator(mode="after")
    def _argon2_floor(self) -> Settings:
        work = self.argon2_memory_kib * self.argon2_time_cost
        if self.argon2_memory_kib < ARGON2_MIN_MEMORY_KIB or work < ARGON2_MIN_WORK:
            raise ValueError("argon2 parameters are below the OWASP minimum (m=19 MiB, t=2)")
        return self

    @field_validator("public_url")
    @classmethod
    def _no_trailing_slash(cls, url: str) -> str:
        return url.rstrip("/")

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'levqor.db').resolve()}"

    @property
    def backups_path(self) -> Path:
        return self.backup_dir or self.data_dir / "backups"

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")

    def rate_limit_for_plan(self, plan: str) -> int:
        return self.rate_limit_plans.get(plan, self.rate_limit_per_minute)


def _refuse_weak_secret(name: str, value: str) -> None:
    if value.lower() in PLACEHOLDER_SECRETS or len(value) < MIN_SECRET_LENGTH:
        raise ValueError(f"{name} must be a random value of at least {MIN_SECRET_LENGTH} chars")


def share_metrics_between_processes(settings: Settings, port: int) -> Settings:
    """For `levqor serve` and `levqor up`, before they start their processes:
    prometheus-client's multi-process mode in `<data dir>/metrics-<port>`, which each
    process picks up when it imports the library; `settings` with it. The directory
    starts empty (counters from an earlier run would add up)."""
    directory = settings.data_dir / f"metrics-{port}"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return settings.model_copy(update={"prometheus_multiproc_dir": directory})


def environment_for(settings: Settings) -> dict[str, str]:
    """This process's environment with `settings`' data folder, address and database
    (what a command line may have decided): for a child process that must load the same
    settings."""
    env = dict(os.environ)
    env["LEVQOR_DATA_DIR"] = str(settings.data_dir)
    env["LEVQOR_PUBLIC_URL"] = settings.public_url
    if settings.database_url:
        env["LEVQOR_DATABASE_URL"] = settings.database_url
    return env


def load_settings(**overrides: Any) -> Settings:
    """Read the environment (and `.env`), then fill missing secrets from the data directory."""
    return with_generated_secrets(Settings(**overrides))


def with_generated_secrets(settings: Settings) -> Settings:
    if settings.jwt_secret and settings.encryption_keys and settings.blind_index_key:
        return settings
    stored = _load_or_create_secrets(settings.data_dir)
    updates: dict[str, Any] = {}
    if settings.jwt_secret is None:
        updates["jwt_secret"] = SecretStr(stored["jwt_secret"])
    if settings.blind_index_key is None:
        if "blind_index_key" not in stored:  # a data directory from before this key
            stored = _add_stored_secret(settings.data_dir, "blind_index_key")
        updates["blind_index_key"] = SecretStr(stored["blind_index_key"])
    if not settings.encryption_keys:
        updates["encryption_keys"] = [SecretStr(key) for key in stored_keys(stored)]
    return settings.model_copy(update=updates)


def stored_keys(stored: dict[str, Any]) -> list[str]:
    """The generated key ring, newest first (`levqor keys rotate` puts a new key first)."""
    keys = stored.get("encryption_keys") or [stored["encryption_key"]]
    return [str(key) for key in keys]


def read_stored_secrets(data_dir: Path) -> dict[str, Any] | None:
    path = data_dir / "secrets.json"
    if not path.exists():
        return None
    stored: dict[str, Any] = json.loads(path.read_text())
    return stored


def add_stored_key(data_dir: Path, key: str) -> list[str]:
    """Put `key` first in the generated ring (atomically, 0600); the new ring."""
    stored = _load_or_create_secrets(data_dir)
    ring = [key, *stored_keys(stored)]
    _replace_secrets(data_dir, {**stored, "encryption_key": key, "encryption_keys": ring})
    return ring


def _add_stored_secret(data_dir: Path, name: str) -> dict[str, Any]:
    stored = {**_load_or_create_secrets(data_dir), name: secrets.token_urlsafe(48)}
    _replace_secrets(data_dir, stored)
    return _load_or_create_secrets(data_dir)


def _replace_secrets(data_dir: Path, stored: dict[str, Any]) -> None:
    path = data_dir / "secrets.json"
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(stored, handle)
    os.replace(temp, path)


def _load_or_create_secrets(data_dir: Path) -> dict[str, Any]:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "secrets.json"
    if not path.exists():
        _write_new_secrets(path)
    os.chmod(path, 0o600)
    stored: dict[str, Any] = json.loads(path.read_text())
    return stored


def _write_new_secrets(path: Path) -> None:
    generated = {
        "jwt_secret": secrets.token_urlsafe(48),
        "blind_index_key": secrets.token_urlsafe(48),
        "encryption_key": Fernet.generate_key().decode(),
    }
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(generated, handle)
    try:
        # link() is atomic and refuses an existing name: when several processes start at
        # once, exactly one file wins and nobody reads a half-written one.
        os.link(temp, path)
    except FileExistsError:
        pass
    finally:
        temp.unlink()
