"""Request and response bodies of the accounts API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, cast

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from levqor.accounts.models import API_KEY_SCOPES
from levqor.types import Email

Scope = Literal["read", "write"]


class SignupIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email
    password: str = Field(min_length=8, max_length=1024)
    name: str | None = Field(None, max_length=200)
    ref: str | None = Field(None, max_length=64, description="A partner's referral code.")
    marketing_consent: StrictBool = Field(
        False, description="Agree to product news by e-mail (recorded with time and source)."
    )


class LoginIn(BaseModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)


class RefreshIn(BaseModel):
    refresh_token: str = Field(max_length=256)


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    email: str
    name: str | None
    role: str
    plan: str
    credits: int
    credits_owed: int = 0  # taken back by a refund after being spent; repaid by the next grant
    created_at: datetime


class TokensOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105
    expires_in: int


class SessionOut(TokensOut):
    user: UserRead


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    scopes: list[Scope] = Field(
        default_factory=lambda: cast(list[Scope], list(API_KEY_SCOPES)), min_length=1
    )


class ApiKeyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The secret. Shown only in this answer.")
