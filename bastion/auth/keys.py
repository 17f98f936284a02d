"""`qbt_` API keys: generated from a CSPRNG, stored as a SHA-256 hash plus a short display prefix.

A fast hash is right here (unlike for passwords): a key carries 238 bits of randomness, so there is
nothing to brute-force, and the lookup sits on the cold path of every new key.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string

KEY_PREFIX = "qbt_"
SECRET_LENGTH = 40  # base62 characters: log2(62) * 40 = 238 bits
DISPLAY_LENGTH = len(KEY_PREFIX) + 8
_ALPHABET = string.ascii_letters + string.digits
_WELL_FORMED = re.compile(rf"{KEY_PREFIX}[A-Za-z0-9]{{32,128}}")


def generate_key() -> str:
    return KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(SECRET_LENGTH))


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def display_prefix(key: str) -> str:
    return key[:DISPLAY_LENGTH]


def well_formed(key: str) -> bool:
    return _WELL_FORMED.fullmatch(key) is not None


def new_id(kind: str) -> str:
    return f"{kind}_{secrets.token_hex(12)}"
