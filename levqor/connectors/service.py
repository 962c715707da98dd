"""Credentials: users' secrets for outside services, sealed with the key ring.

A secret is stored as Fernet-encrypted JSON and leaves this module only decrypted for a
running step of its owner (`for_step`); listings and logs never see it. A step names a
credential by id; another user's id behaves exactly like an unknown one.
"""

from __future__ import annotations

from typing import Any

import orjson
from cryptography.fernet import MultiFernet
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from levqor import errors
from levqor.connectors import registry
from levqor.connectors.errors import ConnectorError
from levqor.connectors.models import Credential
from levqor.db import pages


class CredentialUnusable(ConnectorError):
    """A step names a credential it may not use: unknown, another user's, or for another
    connector. Retrying cannot help."""


async def create(
    session: AsyncSession,
    *,
    user_id: str,
    connector: str,
    name: str,
    secret: dict[str, Any],
    base_url: str | None,
    cipher: MultiFernet,
) -> Credential:
    declared = registry.get(connector)
    missing = [field for field in declared.credential_fields if not secret.get(field)]
    if declared.credential_fields and len(missing) == len(declared.credential_fields):
        raise errors.InvalidRequest(
            f"a {connector} credential needs one of: {', '.join(declared.credential_fields)}"
        )
    credential = Credential(
        user_id=user_id,
        connector=connector,
        name=name,
        base_url=base_url,
        secret_encrypted=cipher.encrypt(orjson.dumps(secret)).decode(),
    )
    session.add(credential)
    await session.flush()
    return credential


async def list_for_user(
    session: AsyncSession, *, user_id: str, limit: int = 100, cursor: str | None = None
) -> tuple[list[Credential], str | None]:
    return await pages.newest_first(
        session,
        select(Credential).where(Credential.user_id == user_id),
        at=Credential.created_at,
        key=Credential.id,
        limit=limit,
        cursor=cursor,
    )


async def delete(session: AsyncSession, *, user_id: str, credential_id: str) -> None:
    credential = await _owned(session, user_id=user_id, credential_id=credential_id)
    if credential is None:
        raise errors.NotFound("No such credential.")
    await session.delete(credential)
    await session.flush()


async def for_step(
    session: AsyncSession,
    *,
    user_id: str,
    credential_id: str,
    connector: str,
    cipher: MultiFernet,
) -> dict[str, Any]:
    """The decrypted secret (plus `base_url`) for a step of `user_id` using `connector`."""
    credential = await _owned(session, user_id=user_id, credential_id=credential_id)
    if credential is None:
        raise CredentialUnusable(f"credential '{credential_id}' does not exist")
    if credential.connector != connector:
        raise CredentialUnusable(
            f"credential '{credential_id}' is for {credential.connector}, not {connector}"
        )
    secret: dict[str, Any] = orjson.loads(cipher.decrypt(credential.secret_encrypted.encode()))
    return {**secret, "base_url": credential.base_url}


async def _owned(session: AsyncSession, *, user_id: str, credential_id: str) -> Credential | None:
    found: Credential | None = await session.scalar(
        select(Credential).where(Credential.id == credential_id, Credential.user_id == user_id)
    )
    return found
