"""The UI over plain HTTP: login, cookies, tokens, CSRF checks and the security headers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import KeelProcess
from tests.ui.conftest import ADMIN_KEY, CSP

pytestmark = pytest.mark.slow

PAGES = ["/", "/prompts", "/playground", "/prompts/nope"]
STATIC = [
    "/static/keel.css",
    "/static/keel.js",
    "/static/playground.js",
    "/static/prompt.js",
    "/static/costs.js",
]


def _secure(resp: httpx.Response) -> None:
    assert resp.headers["content-security-policy"] == CSP
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["referrer-policy"] == "same-origin"


def _login(client: httpx.Client, key: str = ADMIN_KEY, **headers: str) -> httpx.Response:
    origin = {"origin": str(client.base_url).rstrip("/")}
    return client.post("/login", data={"key": key, "next": "/prompts"}, headers=origin | headers)


@pytest.fixture
def client(keel: KeelProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=keel.url, timeout=10) as c:
        yield c


def test_pages_need_login(client: httpx.Client) -> None:
    for path in PAGES:
        resp = client.get(path)
        assert resp.status_code == 303, path
        assert resp.headers["location"] == "/login?next=" + path.replace("/", "%2F")
        _secure(resp)
    login = client.get("/login")
    assert login.status_code == 200
    assert 'name="key"' in login.text
    _secure(login)


def test_login_sets_a_strict_httponly_cookie(client: httpx.Client) -> None:
    resp = _login(client)
    assert resp.status_code == 303
    assert resp.headers["location"] == "/prompts"
    cookie = resp.headers["set-cookie"]
    assert cookie.startswith("keel_ui=keel-ui.")
    assert ADMIN_KEY not in cookie
    lowered = cookie.lower()
    assert "httponly" in lowered and "samesite=strict" in lowered and "path=/" in lowered
    for path in PAGES:
        page = client.get(path)
        assert page.status_code == (404 if path == "/prompts/nope" else 200), path
        assert page.headers["cache-control"] == "no-store"
        _secure(page)
    assert "keel-ui." in client.get("/prompts").text
    for path in STATIC:
        _secure(client.get(path))
    logout = client.post("/logout", headers={"origin": str(client.base_url).rstrip("/")})
    assert logout.status_code == 303
    assert client.get("/prompts").status_code == 303


def test_wrong_key_and_cross_site_logins_are_refused(client: httpx.Client) -> None:
    wrong = _login(client, key="not-the-key")
    assert wrong.status_code == 401
    assert "set-cookie" not in wrong.headers
    assert "wrong admin key" in wrong.text
    for headers in ({"origin": "http://evil.example"}, {"origin": "null"}):
        resp = _login(client, **headers)
        assert resp.status_code == 403
        assert "set-cookie" not in resp.headers
    bare = client.post("/login", data={"key": ADMIN_KEY})  # no Origin, no Referer
    assert bare.status_code == 403
    referer = client.post(
        "/login",
        data={"key": ADMIN_KEY},
        headers={"referer": str(client.base_url).rstrip("/") + "/login"},
    )
    assert referer.status_code == 303


def test_next_never_leaves_the_site(client: httpx.Client) -> None:
    origin = {"origin": str(client.base_url).rstrip("/")}
    for target in ("https://evil.example/", "//evil.example", "/\\evil.example", "javascript:x"):
        resp = client.post("/login", data={"key": ADMIN_KEY, "next": target}, headers=origin)
        assert resp.headers["location"] == "/", target


def test_page_token_is_an_admin_bearer_token(client: httpx.Client) -> None:
    _login(client)
    html = client.get("/prompts").text
    token = html.split('name="keel-token" content="', 1)[1].split('"', 1)[0]
    assert token.startswith("keel-ui.")
    bearer = {"authorization": f"Bearer {token}"}
    assert client.get("/api/v1/keys", headers=bearer).status_code == 200
    assert client.get("/v1/models", headers=bearer).status_code == 200
    forged = token[:-4] + ("0000" if not token.endswith("0000") else "1111")
    resp = client.get("/api/v1/keys", headers={"authorization": f"Bearer {forged}"})
    assert resp.status_code == 401
    assert "UI token" in resp.json()["error"]["message"]
    session = client.cookies["keel_ui"]
    as_bearer = {"authorization": f"Bearer {session}"}
    assert client.get("/api/v1/keys", headers=as_bearer).status_code == 401
    # the cookie alone authenticates no API call: API writes need the Bearer token
    assert client.get("/api/v1/keys").status_code == 401


def test_open_mode_needs_no_login(tmp_path: Path) -> None:
    proc = KeelProcess(tmp_path / "open").start(timeout=60)
    try:
        with httpx.Client(base_url=proc.url, timeout=10) as c:
            for path in ["/", "/prompts", "/playground"]:
                resp = c.get(path)
                assert resp.status_code == 200, path
                _secure(resp)
                assert 'name="keel-token" content=""' in resp.text
            assert c.get("/login").status_code == 303
    finally:
        proc.stop()
