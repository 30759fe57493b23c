"""Virtual API keys: the key format, their storage (salt and hash only) and authentication."""

from keel.keys.auth import Authenticator, AuthError, Principal, authorize_model
from keel.keys.store import KeyInfo, KeyRow

__all__ = ["AuthError", "Authenticator", "KeyInfo", "KeyRow", "Principal", "authorize_model"]
