"""Symmetric encryption at rest: one MultiFernet key ring built from settings.

The first key encrypts, every key decrypts, so keys rotate by putting a new one first
and re-encrypting (`levqor keys rotate`). When the ring is the generated one in the data
directory, a process that meets a token it cannot open re-reads the ring once: a key
added by `levqor keys rotate` while it runs is picked up without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import threading

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from levqor.config import Settings, read_stored_secrets, stored_keys


class KeyRing(MultiFernet):
    def __init__(self, keys: list[str], settings: Settings) -> None:
        super().__init__([Fernet(key) for key in keys])
        self.keys = keys
        self._settings = settings
        self._lock = threading.Lock()
        self._seen: int | None = None

    def encrypt(self, msg: bytes) -> bytes:
        self._follow_file()
        return super().encrypt(msg)

    def _follow_file(self) -> None:
        """Encrypt with the newest key: notice a rotation by the file's change time (a
        stat, not a read), so nothing new is sealed with a key about to be retired."""
        path = self._settings.data_dir / "secrets.json"
        try:
            changed = path.stat().st_mtime_ns
        except OSError:
            return
        if changed != self._seen:
            self._seen = changed
            self._reload()

    def decrypt(self, msg: bytes | str, ttl: int | None = None) -> bytes:
        try:
            return super().decrypt(msg, ttl)
        except InvalidToken:
            if not self._reload():
                raise
            return super().decrypt(msg, ttl)

    def _reload(self) -> bool:
        """Adopt the data directory's ring if it extends ours; True when it changed."""
        stored = read_stored_secrets(self._settings.data_dir)
        if stored is None:
            return False
        return self.extend(stored_keys(stored))

    def extend(self, keys: list[str]) -> bool:
        """Adopt `keys` if they hold every key of this ring (a rotation's new key first);
        True when the ring changed."""
        if keys == self.keys or not set(self.keys) <= set(keys):
            return False  # unchanged, or not the ring this process was built from
        with self._lock:
            self._fernets = [Fernet(key) for key in keys]
            self.keys = keys
        return True


def build_cipher(settings: Settings) -> KeyRing:
    """The key ring `settings` name (`db.engine.create_database` binds it to the engines)."""
    if not settings.encryption_keys:
        raise ValueError("no encryption keys: build settings with load_settings()")
    return KeyRing([key.get_secret_value() for key in settings.encryption_keys], settings)


def address_hash(key: str, address: str) -> str:
    """The blind index of an e-mail address: HMAC-SHA256 of it, trimmed and lower-cased,
    under `LEVQOR_BLIND_INDEX_KEY`. Accounts find users by it; the suppression list
    matches mail to the same index."""
    normalised = address.strip().lower()
    return hmac.new(key.encode(), normalised.encode(), hashlib.sha256).hexdigest()
