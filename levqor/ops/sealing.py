"""Files sealed for a backup: Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`)
over fixed-size chunks, so a large database never has to fit in memory.

A sealed file is a sequence of frames, each a 4-byte big-endian length and a Fernet token
whose clear text starts with the chunk's 8-byte index and a 1-byte "last" flag: a frame
moved, dropped or cut off fails to open, not just a changed byte.

The generated keys are sealed apart, with a key derived from the operator's passphrase
(scrypt), since the key ring cannot seal the file that holds the key ring.
"""

from __future__ import annotations

import base64
import struct
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

CHUNK = 1024 * 1024
HEADER = struct.Struct(">QB")  # chunk index, last
LENGTH = struct.Struct(">I")
SALT_BYTES = 16


class Unsealable(Exception):
    """The file does not open with these keys, or was changed."""


def seal_file(cipher: MultiFernet, source: Path, target: Path) -> None:
    with source.open("rb") as clear, target.open("wb") as sealed:
        index, chunk = 0, clear.read(CHUNK)
        while True:
            following = clear.read(CHUNK)
            token = cipher.encrypt(HEADER.pack(index, not following) + chunk)
            sealed.write(LENGTH.pack(len(token)) + token)
            if not following:
                return
            index, chunk = index + 1, following


def open_file(cipher: MultiFernet, source: Path, target: Path) -> None:
    """Write the clear file; Unsealable if a frame does not open or is out of place."""
    with source.open("rb") as sealed, target.open("wb") as clear:
        expected = 0
        while True:
            size = sealed.read(LENGTH.size)
            if len(size) < LENGTH.size:
                raise Unsealable("the file ends before its last chunk")
            token = sealed.read(LENGTH.unpack(size)[0])
            try:
                opened = cipher.decrypt(token)
            except InvalidToken as exc:
                raise Unsealable("a chunk does not open with these keys") from exc
            index, last = HEADER.unpack(opened[: HEADER.size])
            if index != expected:
                raise Unsealable("a chunk is out of place")
            clear.write(opened[HEADER.size :])
            if last:
                if sealed.read(1):
                    raise Unsealable("there is data after the last chunk")
                return
            expected += 1


def passphrase_cipher(passphrase: str, salt: bytes) -> Fernet:
    key = Scrypt(salt=salt, length=32, n=2**15, r=8, p=1).derive(passphrase.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def seal_with_passphrase(passphrase: str, data: bytes, salt: bytes) -> bytes:
    return base64.b64encode(salt) + b"." + passphrase_cipher(passphrase, salt).encrypt(data)


def open_with_passphrase(passphrase: str, sealed: bytes) -> bytes:
    salt, _, token = sealed.partition(b".")
    try:
        return passphrase_cipher(passphrase, base64.b64decode(salt)).decrypt(token)
    except (InvalidToken, ValueError) as exc:
        raise Unsealable("the passphrase does not open the keys") from exc
