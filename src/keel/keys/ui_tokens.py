"""Short-lived tokens for the web UI: `keel-ui.<expiry>.<hmac-sha256 hex>`.

The UI never hands the admin key to the browser. After a login with the admin key it holds a
session token in an HttpOnly cookie, and each page embeds an API token (1 h) that its scripts
send as `Authorization: Bearer …`. Both are an expiry (unix seconds) signed with a secret derived
from the admin key, one secret per purpose, so a session cookie is not an API token and the other
way round. Changing the admin key invalidates every token. A token holds no key material.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import Literal

__all__ = ["API_TTL_S", "PREFIX", "SESSION_TTL_S", "derive_secret", "issue", "looks_like", "verify"]

PREFIX = "keel-ui."
API_TTL_S = 3600
SESSION_TTL_S = 12 * 3600
_TOKEN_RE = re.compile(r"keel-ui\.([0-9]{1,12})\.([0-9a-f]{64})")

Purpose = Literal["session", "api"]


def derive_secret(admin_key: str, purpose: Purpose) -> bytes:
    """The signing secret for one purpose: HMAC-SHA256(admin key, label)."""
    label = f"keel-ui-token-v1:{purpose}".encode("ascii")
    return hmac.new(admin_key.encode("utf-8"), label, hashlib.sha256).digest()


def _signature(secret: bytes, expiry: int) -> str:
    return hmac.new(secret, f"{PREFIX}{expiry}".encode("ascii"), hashlib.sha256).hexdigest()


def issue(secret: bytes, ttl: float, *, now: float | None = None) -> str:
    """A token valid for `ttl` seconds from `now` (default: the current time)."""
    expiry = int((time.time() if now is None else now) + ttl)
    return f"{PREFIX}{expiry}.{_signature(secret, expiry)}"


def looks_like(token: str) -> bool:
    """True when `token` has the UI token prefix (it may still be forged or expired)."""
    return token.startswith(PREFIX)


def verify(secret: bytes, token: str, *, now: float | None = None) -> bool:
    """True for a well-formed, unexpired token signed with `secret` (constant-time compare)."""
    match = _TOKEN_RE.fullmatch(token) if isinstance(token, str) else None
    if match is None:
        return False
    expiry = int(match.group(1))
    good = hmac.compare_digest(_signature(secret, expiry).encode(), match.group(2).encode())
    return good and expiry > (time.time() if now is None else now)
