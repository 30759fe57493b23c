"""UI tokens, the login helpers, the authenticator's acceptance of UI tokens, the diff rows."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.requests import Request

from keel.keys import ui_tokens
from keel.keys.auth import Authenticator, AuthError, Principal
from keel.ui.diffview import Row, side_by_side
from keel.ui.session import safe_next, same_origin

ADMIN = "admin-key-for-ui-unit-tests-0123"
NOW = 1_700_000_000.0


def test_token_shape_and_lifetime() -> None:
    secret = ui_tokens.derive_secret(ADMIN, "api")
    token = ui_tokens.issue(secret, 3600, now=NOW)
    prefix, expiry, mac = token.split(".")
    assert (prefix, int(expiry), len(mac)) == ("keel-ui", int(NOW) + 3600, 64)
    assert ADMIN not in token
    assert ui_tokens.verify(secret, token, now=NOW + 3599)
    assert not ui_tokens.verify(secret, token, now=NOW + 3600)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("0" if t[-1] != "0" else "1"),  # signature
        lambda t: t.replace(".", f".{9}", 1),  # expiry pushed out
        lambda t: t + " ",
        lambda t: t.upper(),
        lambda t: "",
    ],
)
def test_tampered_tokens_fail(mangle: object) -> None:
    secret = ui_tokens.derive_secret(ADMIN, "api")
    token = ui_tokens.issue(secret, 3600, now=NOW)
    assert callable(mangle)
    assert not ui_tokens.verify(secret, mangle(token), now=NOW)


def test_purposes_and_keys_do_not_mix() -> None:
    session = ui_tokens.derive_secret(ADMIN, "session")
    api = ui_tokens.derive_secret(ADMIN, "api")
    other = ui_tokens.derive_secret(ADMIN + "x", "api")
    token = ui_tokens.issue(session, 60, now=NOW)
    assert not ui_tokens.verify(api, token, now=NOW)
    assert not ui_tokens.verify(other, ui_tokens.issue(api, 60, now=NOW), now=NOW)


async def test_authenticator_takes_a_ui_token_as_the_admin() -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    clock = [NOW]
    auth = Authenticator(engine, ADMIN, clock=lambda: clock[0])
    token = ui_tokens.issue(ui_tokens.derive_secret(ADMIN, "api"), 3600, now=NOW)
    assert await auth.authenticate(f"Bearer {token}") == Principal(kind="admin", name="ui")
    session = ui_tokens.issue(ui_tokens.derive_secret(ADMIN, "session"), 3600, now=NOW)
    for bad in (session, token[:-2] + "00"):
        with pytest.raises(AuthError) as err:
            await auth.authenticate(f"Bearer {bad}")
        assert err.value.status == 401
    clock[0] = NOW + 3600
    with pytest.raises(AuthError):
        await auth.authenticate(f"Bearer {token}")
    # open mode has no UI tokens to check: anything is the open principal, as before
    assert (await Authenticator(engine, None).authenticate(f"Bearer {token}")).kind == "open"
    await engine.dispose()


def _request(headers: dict[str, str]) -> Request:
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "POST", "path": "/login", "headers": raw})


@pytest.mark.parametrize(
    ("headers", "ok"),
    [
        ({"host": "127.0.0.1:4000", "origin": "http://127.0.0.1:4000"}, True),
        ({"host": "127.0.0.1:4000", "referer": "http://127.0.0.1:4000/login?next=/"}, True),
        ({"host": "keel.internal", "origin": "https://keel.internal"}, True),
        ({"host": "127.0.0.1:4000", "origin": "http://127.0.0.1:4001"}, False),
        ({"host": "127.0.0.1:4000", "origin": "null"}, False),
        ({"host": "127.0.0.1:4000"}, False),
        ({"origin": "http://127.0.0.1:4000"}, False),
    ],
)
def test_same_origin(headers: dict[str, str], ok: bool) -> None:
    assert same_origin(_request(headers)) is ok


@pytest.mark.parametrize(
    ("target", "safe"),
    [
        ("/prompts/a?version=2", "/prompts/a?version=2"),
        (None, "/"),
        ("https://evil.example", "/"),
        ("//evil.example/x", "/"),
        ("/\\evil.example", "/"),
        ("/a\nb", "/"),
    ],
)
def test_safe_next(target: str | None, safe: str) -> None:
    assert safe_next(target) == safe


def test_side_by_side_rows() -> None:
    rows = side_by_side("a\nb\nc\n", "a\nB\nc\nd\n")
    assert rows == [
        Row("equal", 1, "a", 1, "a"),
        Row("replace", 2, "b", 2, "B"),
        Row("equal", 3, "c", 3, "c"),
        Row("insert", None, None, 4, "d"),
    ]
    assert side_by_side("x\ny", "y") == [
        Row("delete", 1, "x", None, None),
        Row("equal", 2, "y", 1, "y"),
    ]
