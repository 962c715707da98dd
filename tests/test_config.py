"""Settings: environment names, generated secrets, refusals."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from levqor.config import Settings, load_settings


def test_secrets_are_generated_once_with_mode_0600(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEVQOR_DATA_DIR", str(tmp_path))
    first = load_settings(_env_file=None)
    second = load_settings(_env_file=None)
    path = tmp_path / "secrets.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert first.jwt_secret is not None
    assert second.jwt_secret is not None
    assert first.jwt_secret.get_secret_value() == second.jwt_secret.get_secret_value()
    assert len(first.jwt_secret.get_secret_value()) >= 48
    assert (
        first.encryption_keys[0].get_secret_value() == second.encryption_keys[0].get_secret_value()
    )


def test_secrets_never_appear_in_repr(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, _env_file=None)
    assert settings.jwt_secret is not None
    assert settings.jwt_secret.get_secret_value() not in repr(settings)


def test_given_secret_wins_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEVQOR_JWT_SECRET", "s" * 40)
    settings = load_settings(data_dir=tmp_path, _env_file=None)
    assert settings.jwt_secret is not None
    assert settings.jwt_secret.get_secret_value() == "s" * 40


@pytest.mark.parametrize("secret", ["changeme", "short-secret"])
def test_placeholder_or_short_jwt_secret_is_refused(secret: str) -> None:
    with pytest.raises(ValidationError, match="LEVQOR_JWT_SECRET"):
        Settings(jwt_secret=secret, _env_file=None)


def test_argon2_below_owasp_minimum_is_refused() -> None:
    with pytest.raises(ValidationError, match="OWASP"):
        Settings(argon2_memory_kib=4096, argon2_time_cost=1, _env_file=None)


def test_jwt_leeway_is_capped_at_30_seconds() -> None:
    with pytest.raises(ValidationError):
        Settings(jwt_leeway_s=60, _env_file=None)


def test_environment_names_from_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEVQOR_DATABASE_URL", "postgresql://u@db:5432/levqor")
    monkeypatch.setenv("LEVQOR_REDIS_URL", "redis://cache:6379/0")
    monkeypatch.setenv("LEVQOR_ALLOW_PRIVATE_URLS", "127.0.0.1/32, 10.0.0.0/8")
    monkeypatch.setenv("LEVQOR_RATE_LIMIT_PER_MINUTE", "120")
    monkeypatch.setenv("LEVQOR_FREE_CREDITS", "10")
    monkeypatch.setenv("LEVQOR_RATE_LIMIT_PLANS", '{"pro": 600}')
    settings = Settings(_env_file=None)
    assert settings.sqlalchemy_url == "postgresql+asyncpg://u@db:5432/levqor"
    assert settings.redis_url == "redis://cache:6379/0"
    assert settings.allow_private_urls == ["127.0.0.1/32", "10.0.0.0/8"]
    assert settings.rate_limit_per_minute == 120
    assert settings.free_credits == 10
    assert settings.rate_limit_for_plan("pro") == 600
    assert settings.rate_limit_for_plan("free") == 120


def test_default_database_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, _env_file=None)
    assert settings.sqlalchemy_url == f"sqlite+aiosqlite:///{tmp_path.resolve()}/levqor.db"


def test_smtp_in_one_url_as_api_md_names_it() -> None:
    settings = Settings(_env_file=None, smtp_url="smtps://mailer:p%40ss@mail.example.com:465")
    assert (settings.smtp_host, settings.smtp_port, settings.smtp_security) == (
        "mail.example.com",
        465,
        "ssl",
    )
    assert settings.smtp_username == "mailer"
    assert settings.smtp_password is not None
    assert settings.smtp_password.get_secret_value() == "p@ss"
    plain = Settings(_env_file=None, smtp_url="smtp://relay.example.com", smtp_port=2525)
    assert (plain.smtp_host, plain.smtp_port, plain.smtp_security) == (
        "relay.example.com",
        2525,
        "starttls",
    )


def test_buffer_takes_api_md_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEVQOR_BUFFER_API_BASE", "http://127.0.0.1:9/graphql")
    assert Settings(_env_file=None).buffer_url == "http://127.0.0.1:9/graphql"
