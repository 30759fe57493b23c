"""Virtual key strings: `sk-keel-<id>-<secret>`, how they are made, parsed and checked.

The id is public (it names the key in lists and logs); the secret is shown once and only
`sha256(salt + secret)` is kept. Parsing is a strict full match, so anything that is not a
well-formed Keel key is turned away before any storage is touched.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

__all__ = [
    "ID_LENGTH",
    "PREFIX",
    "NewKey",
    "display_prefix",
    "generate",
    "hash_secret",
    "is_key_id",
    "new_salt",
    "parse",
    "verify",
]

PREFIX = "sk-keel-"
ID_LENGTH = 12
_SECRET_BYTES = 32
_SECRET_LENGTH = 43  # urlsafe base64 of 32 bytes, without padding
_TOKEN_LENGTH = len(PREFIX) + ID_LENGTH + 1 + _SECRET_LENGTH
_ID_RE = re.compile(r"[a-z2-7]{12}")
_TOKEN_RE = re.compile(r"sk-keel-([a-z2-7]{12})-([A-Za-z0-9_-]{43})")


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly made key. `secret` and `token` are kept out of repr so they never reach logs."""

    id: str
    secret: str = field(repr=False)
    token: str = field(repr=False)


def generate() -> NewKey:
    """A new random key: 60-bit id, 256-bit secret."""
    raw = base64.b32encode(secrets.token_bytes(8)).decode("ascii")
    key_id = raw[:ID_LENGTH].lower()
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    return NewKey(id=key_id, secret=secret, token=f"{PREFIX}{key_id}-{secret}")


def parse(token: str) -> tuple[str, str] | None:
    """`(id, secret)` of a well-formed Keel key, else None. Pure: never touches storage."""
    if not isinstance(token, str) or len(token) != _TOKEN_LENGTH:
        return None
    match = _TOKEN_RE.fullmatch(token)
    if match is None:
        return None
    return match.group(1), match.group(2)


def is_key_id(value: str) -> bool:
    """True when `value` has the shape of a key id (12 lower-case base32 characters)."""
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def display_prefix(key_id: str) -> str:
    """How a key is shown after creation: `sk-keel-<id>-…`, enough to recognise it."""
    return f"{PREFIX}{key_id}-…"


def new_salt() -> str:
    """A per-key salt: 16 random bytes, hex."""
    return secrets.token_hex(16)


def hash_secret(salt: str, secret: str) -> str:
    """sha256 of salt + secret, hex. The secret is 256 random bits, so one round is enough."""
    return hashlib.sha256((salt + secret).encode("utf-8")).hexdigest()


def verify(salt: str, hash: str, secret: str) -> bool:
    """True when `secret` matches the stored `hash`, compared in constant time."""
    return hmac.compare_digest(hash_secret(salt, secret).encode("ascii"), hash.encode("utf-8"))
