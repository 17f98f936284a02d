"""Dashboard passwords: argon2id (argon2-cffi's defaults: RFC 9106's low-memory profile), hashed and
verified on a worker thread so the event loop serving `/v1` never waits on one.

A sign-in with an unknown email verifies against a dummy hash, so it takes as long as a wrong password.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 12
MAX_LENGTH = 1024  # argon2 takes any length; this bounds the work one request can ask for

_hasher = PasswordHasher()  # argon2id
_DUMMY = _hasher.hash("bastion: no such user, same work as a wrong password")


class WeakPassword(ValueError):
    pass


def check_strength(password: str, email: str | None = None) -> None:
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"the password needs at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"the password may have at most {MAX_LENGTH} characters")
    if email and password.strip().lower() == email.strip().lower():
        raise WeakPassword("the password cannot be the email address")


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when `password` matches; with no stored hash (unknown user), the same work and False."""
    return await asyncio.to_thread(_verify, stored_hash, password)


def _verify(stored_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash or _DUMMY, password[:MAX_LENGTH]) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _hasher.check_needs_rehash(stored_hash)
