"""Key strings: generate, parse strictly, hash and verify."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from keel.keys import tokens


def test_generate_shape() -> None:
    key = tokens.generate()
    assert re.fullmatch(r"[a-z2-7]{12}", key.id)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", key.secret)
    assert key.token == f"sk-keel-{key.id}-{key.secret}"
    assert tokens.parse(key.token) == (key.id, key.secret)


def test_generate_is_random_and_repr_hides_secret() -> None:
    keys = [tokens.generate() for _ in range(200)]
    assert len({k.id for k in keys}) == 200
    assert len({k.secret for k in keys}) == 200
    assert keys[0].secret not in repr(keys[0])
    assert repr(keys[0]) == f"NewKey(id={keys[0].id!r})"


GOOD = "sk-keel-abcdefgh2345-" + "A" * 42 + "_"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "sk-keel-",
        "sk-keel-' OR 1=1 --",
        "sk-keel-abcdefgh2345-' OR '1'='1'; DROP TABLE keys; --xxxxxxxxxxxxxxx",
        "sk-keel-abcdefgh2345'--" + "A" * 41,
        GOOD + "A",  # too long
        GOOD[:-1],  # too short
        GOOD + "\n",
        "\n" + GOOD[1:],
        " " + GOOD[1:],
        GOOD.upper(),
        GOOD.replace("abcdefgh2345", "ABCDEFGH2345"),
        GOOD.replace("abcdefgh2345", "abcdefgh2341"),  # 1 is not base32
        GOOD.replace("sk-keel-", "sk-kell-"),
        GOOD[:-1] + "=",
        GOOD[:-1] + "+",
        GOOD[:-1] + "é",
        GOOD.replace("abcdefgh2345", "abcdefgh234\uff15"),  # a full-width digit
        "sk-proj-" + "A" * 56,
        "Bearer " + GOOD,
    ],
)
def test_parse_rejects(token: str) -> None:
    assert tokens.parse(token) is None


def test_parse_accepts_and_rejects_non_strings() -> None:
    assert tokens.parse(GOOD) == ("abcdefgh2345", "A" * 42 + "_")
    assert tokens.parse(None) is None  # type: ignore[arg-type]
    assert tokens.parse(b"sk-keel-x") is None  # type: ignore[arg-type]


def test_parse_is_pure() -> None:
    # the module that parses keys cannot reach storage: it imports none
    source = Path(tokens.__file__).read_text()
    assert "sqlalchemy" not in source and "keel.storage" not in source


def test_is_key_id() -> None:
    assert tokens.is_key_id("abcdefgh2345")
    for bad in ["", "abcdefgh234", "abcdefgh23456", "ABCDEFGH2345", "abcdefgh234'", "1" * 12]:
        assert not tokens.is_key_id(bad)


def test_hash_and_verify() -> None:
    salt = tokens.new_salt()
    assert re.fullmatch(r"[0-9a-f]{32}", salt)
    assert salt != tokens.new_salt()
    digest = tokens.hash_secret(salt, "secret")
    assert digest == hashlib.sha256((salt + "secret").encode()).hexdigest()
    assert tokens.verify(salt, digest, "secret")
    assert not tokens.verify(salt, digest, "secreT")
    assert not tokens.verify(tokens.new_salt(), digest, "secret")
    assert not tokens.verify(salt, digest, "sécret")
    assert not tokens.verify(salt, "", "secret")


def test_display_prefix() -> None:
    assert tokens.display_prefix("abcdefgh2345") == "sk-keel-abcdefgh2345-…"


def test_public_names() -> None:
    import keel.keys
    from keel.api import auth as api_auth
    from keel.api import keys as api_keys
    from keel.keys import auth, store

    for module in (keel.keys, tokens, store, auth, api_auth, api_keys):
        assert all(hasattr(module, name) for name in module.__all__), module.__name__
