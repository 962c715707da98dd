"""What accounts publishes (`levqor.events`): facts about users that other packages act on."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UserCreated:
    """A user row exists (signup, `levqor create-admin`, the first admin of `levqor up`):
    billing grants the opening credits."""

    user_id: str


@dataclass(frozen=True)
class UserSignedUp:
    """A person signed up themselves: partners attribute the referral, compliance records
    the consent they gave."""

    user_id: str
    referral_code: str | None
    marketing_consent: bool
    # For the partners' fraud guard, in memory only: the address as given, and keyed
    # hashes of the client's IP and of the device cookie its browser presented.
    email: str = ""
    ip_hash: str | None = None
    device_hash: str | None = None
