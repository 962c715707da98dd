"""argon2id password hashing, off the event loop (argon2 releases the GIL).

argon2 and anyio load at the first password hashed or checked, not with the module:
every process builds `Passwords` (the runtime's auth kit), and a worker, which never
checks a password, was spending 1% of its start loading them.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from levqor.config import Settings

if TYPE_CHECKING:
    from argon2 import PasswordHasher


class Passwords:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def hash(self, password: str) -> str:
        import anyio.to_thread

        return await anyio.to_thread.run_sync(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Check a password; with no hash, spend the same time and answer False."""
        import anyio.to_thread
        from argon2.exceptions import InvalidHashError, VerificationError

        target = password_hash or self._dummy_hash
        try:
            await anyio.to_thread.run_sync(self._hasher.verify, target, password)
        except (VerificationError, InvalidHashError):
            return False
        return password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)

    @cached_property
    def _hasher(self) -> PasswordHasher:
        from argon2 import PasswordHasher, Type

        return PasswordHasher(
            time_cost=self._settings.argon2_time_cost,
            memory_cost=self._settings.argon2_memory_kib,
            parallelism=self._settings.argon2_parallelism,
            type=Type.ID,
        )

    @cached_property
    def _dummy_hash(self) -> str:
        return self._hasher.hash("levqor-timing-equaliser")
