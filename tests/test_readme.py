"""The README is part of the contract: its settings table lists every setting."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices

from levqor.config import Settings

README = Path(__file__).parent.parent / "README.md"


def _env_name(name: str, alias: object) -> str:
    """The environment variable a setting is documented by: its alias (the first that
    looks like one, for several), else LEVQOR_ and its name."""
    if isinstance(alias, AliasChoices):
        return next(str(choice) for choice in alias.choices if str(choice).isupper())
    return str(alias or f"LEVQOR_{name.upper()}")


def test_every_setting_is_documented() -> None:
    text = README.read_text()
    names = [
        _env_name(name, field.validation_alias) for name, field in Settings.model_fields.items()
    ]
    missing = [name for name in names if f"`{name}`" not in text]
    assert missing == []


def test_readme_opens_with_run_and_test() -> None:
    lines = README.read_text().splitlines()
    commands = [line for line in lines[:8] if line.startswith("make ")]
    assert [line.split()[1] for line in commands] == ["run", "test"]
