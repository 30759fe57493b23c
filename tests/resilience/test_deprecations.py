"""The deprecation table of a running Keel: before the sunset a model is served as asked with
`x-keel-deprecated`; after it, `route` serves the replacement and `refuse` answers 410."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.resilience.conftest import (
    ADMIN,
    WatchedOpenAI,
    customer,
    provider,
    settled_records,
    start_keel,
)
from tests.servers import KeelProcess

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]

FUTURE, PAST = "2999-12-31", "2000-01-01"


@pytest.fixture(scope="module")
def keel(
    tmp_path_factory: pytest.TempPathFactory, upstreams: tuple[WatchedOpenAI, WatchedOpenAI]
) -> Iterator[KeelProcess]:
    primary, backup = upstreams
    target = {"model": "gpt-4o-mini"}
    config = {
        "providers": {"primary": provider(primary), "backup": provider(backup)},
        "models": [
            {"name": "old-chat", "targets": [{"provider": "primary", **target}]},
            {"name": "retired-chat", "targets": [{"provider": "primary", **target}]},
            {"name": "gone-chat", "targets": [{"provider": "primary", **target}]},
            {"name": "new-chat", "targets": [{"provider": "backup", **target}]},
        ],
        "deprecations": [
            {"model": "old-chat", "replacement": "new-chat", "sunset": FUTURE, "policy": "route"},
            {"model": "retired-chat", "replacement": "new-chat", "sunset": PAST, "policy": "route"},
            {"model": "gone-chat", "replacement": "new-chat", "sunset": PAST, "policy": "refuse"},
        ],
    }
    proc = start_keel(tmp_path_factory.mktemp("keel"), config)
    yield proc
    proc.stop()


def _ask(keel: KeelProcess, model: str, who: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "still there"}]}
    return httpx.post(
        f"{keel.url}/v1/chat/completions",
        json=body,
        headers={**ADMIN, "x-keel-customer": who},
        timeout=10,
    )


def _counted(keel: KeelProcess) -> dict[str, float]:
    text = httpx.get(f"{keel.url}/metrics", headers=ADMIN, timeout=5).text
    found = re.findall(
        r'^keel_deprecated_model_requests_total\{model="([^"]+)"\} (\S+)$', text, re.M
    )
    return {model: float(value) for model, value in found}


def test_before_the_sunset_the_model_is_served_with_a_header(keel: KeelProcess) -> None:
    who = customer()
    resp = _ask(keel, "old-chat", who)
    assert resp.status_code == 200
    assert resp.headers["x-keel-provider"] == "primary"
    assert resp.headers["x-keel-deprecated"] == (
        f"model=old-chat; replacement=new-chat; sunset={FUTURE}"
    )
    (record,) = settled_records(keel, who, 1)
    assert {k: record[k] for k in ("model", "provider", "deprecated_model", "status_code")} == {
        "model": "old-chat",
        "provider": "primary",
        "deprecated_model": "old-chat",
        "status_code": 200,
    }
    assert _counted(keel).get("old-chat", 0) >= 1


def test_after_the_sunset_route_serves_the_replacement(keel: KeelProcess) -> None:
    who = customer()
    resp = _ask(keel, "retired-chat", who)
    assert resp.status_code == 200
    assert resp.headers["x-keel-provider"] == "backup"  # new-chat's provider
    assert resp.headers["x-keel-deprecated"] == (
        f"model=retired-chat; replacement=new-chat; sunset={PAST}"
    )
    (record,) = settled_records(keel, who, 1)
    assert record["deprecated_model"] == "retired-chat" and record["provider"] == "backup"


def test_after_the_sunset_refuse_answers_410(keel: KeelProcess) -> None:
    who = customer()
    before = _counted(keel).get("gone-chat", 0)
    resp = _ask(keel, "gone-chat", who)
    assert resp.status_code == 410
    error = resp.json()["error"]
    assert error["code"] == "model_retired" and "new-chat" in error["message"]
    (record,) = settled_records(keel, who, 1)
    assert record["status_code"] == 410 and record["deprecated_model"] in (None, "gone-chat")
    assert _counted(keel)["gone-chat"] == before + 1
