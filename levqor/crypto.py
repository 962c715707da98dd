"""Symmetric encryption at rest: one MultiFernet key ring built from settings.

The first key encrypts, every key decrypts, so keys rotate by putting a new one first.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, MultiFernet

from levqor.config import Settings


def build_cipher(settings: Settings) -> MultiFernet:
    if not settings.encryption_keys:
        raise ValueError("no encryption keys: build settings with load_settings()")
    return MultiFernet([Fernet(key.get_secret_value()) for key in settings.encryption_keys])
