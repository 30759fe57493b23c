"""PromptService on SQLite and PostgreSQL: versions, concurrency, labels, resolve, diff, events."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from keel.prompts.model import (
    LabelMove,
    PromptContent,
    PromptError,
    PromptSummary,
    PromptVersion,
    content_hash,
)
from keel.prompts.service import PromptService
from keel.storage.database import Database

T0 = 1_700_000_000.0


class Clock:
    """One second later on every reading, so every write has its own time."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        self.now += 1
        return self.now


def chat(system: str, **config: Any) -> PromptContent:
    return PromptContent(
        kind="chat",
        messages=(
            {"role": "system", "content": system},
            {"role": "user", "content": "{{ text }}"},
        ),
        variables=["text"],
        config=config,
        description="Summaries",
    )


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.open(database_url)
    yield database
    await database.close()


@pytest.fixture
def service(db: Database) -> PromptService:
    return PromptService(db, clock=Clock(), label_ttl=60)


async def test_push_numbers_versions_and_identical_content_creates_nothing(
    service: PromptService,
) -> None:
    a, b = chat("Be brief.", model="fast"), chat("Be thorough.", model="fast")
    v1, created = await service.push("summarize", a, message="first", author="admin")
    assert created
    assert v1 == PromptVersion("summarize", 1, content_hash(a), a, "first", "admin", T0 + 1)
    again, created_again = await service.push("summarize", a, message="again", author="k1")
    assert (again, created_again) == (v1, False)
    renamed = dataclasses.replace(a, description="other words")  # not part of the hash
    assert (await service.push("summarize", renamed, message=None, author="k1"))[1] is False
    v2, _ = await service.push("summarize", b, message=None, author="k1")
    assert v2.version == 2
    summary, versions = await service.get_prompt("summarize")
    assert summary == PromptSummary("summarize", "Summaries", 2, {}, (), T0 + 1, T0 + 4)
    assert versions == [v2, v1]
    assert await service.get_version("summarize", 1) == v1
    assert await service.list_prompts() == [summary]
    events, _ = await service.events()
    assert [(e["kind"], e["data"]["version"], e["actor"]) for e in events] == [
        ("prompt.version_created", 2, "k1"),
        ("prompt.version_created", 1, "admin"),
    ]


async def test_concurrent_pushes_number_without_gaps_or_duplicates(service: PromptService) -> None:
    contents = [chat(f"Variant {i}.") for i in range(20)]
    pushed = await asyncio.gather(
        *(service.push("busy", c, message=None, author="k") for c in contents)
    )
    assert sorted(v.version for v, _ in pushed) == list(range(1, 21))
    assert all(created for _, created in pushed)
    by_hash = {v.content_hash: v.version for v, _ in pushed}
    assert len(by_hash) == 20
    same = await asyncio.gather(
        *(service.push("same", chat("Once."), message=None, author="k") for _ in range(10))
    )
    assert [created for _, created in same].count(True) == 1
    assert {v.version for v, _ in same} == {1}
    assert len((await service.get_prompt("same"))[1]) == 1


async def test_push_refuses_bad_names_and_unsafe_templates_and_writes_nothing(
    service: PromptService,
) -> None:
    with pytest.raises(PromptError) as bad_name:
        await service.push("no spaces", chat("x"), message=None, author="k")
    assert bad_name.value.status == 400
    unsafe = chat("{{ ''.__class__ }}")
    with pytest.raises(PromptError, match="'__class__' is not allowed"):
        await service.push("ok", unsafe, message=None, author="k")
    assert await service.list_prompts() == []
    assert await service.events() == ([], None)
    with pytest.raises(PromptError, match="unknown prompt 'ok'") as unknown:
        await service.get_prompt("ok")
    assert unknown.value.status == 404


async def _three_versions(service: PromptService) -> None:
    for i in range(3):
        await service.push("p", chat(f"v{i + 1}"), message=None, author="k")


async def test_labels_protection_rollback_and_history(service: PromptService) -> None:
    await _three_versions(service)
    t = T0 + 3  # the clock after three pushes
    first = await service.move_label("p", "production", 1, actor="k1", is_admin=False)
    assert first == LabelMove("p", "production", None, 1, "k1", t + 1, "promote")
    await service.move_label("p", "production", 2, actor="k1", is_admin=False)
    same = await service.move_label("p", "production", 2, actor="k2", is_admin=False)
    assert same == LabelMove("p", "production", 2, 2, "k2", t + 3, "promote")
    await service.move_label("p", "production", 3, actor="admin", is_admin=True, protect=True)
    with pytest.raises(PromptError) as protected:
        await service.move_label("p", "production", 1, actor="k1", is_admin=False)
    assert (protected.value.status, protected.value.message) == (
        403,
        "label 'production' is protected: only the admin key moves it",
    )
    with pytest.raises(PromptError, match="only the admin key protects") as protect:
        await service.move_label("p", "staging", 1, actor="k1", is_admin=False, protect=True)
    assert protect.value.status == 403
    with pytest.raises(PromptError, match="protected"):
        await service.rollback("p", "production", actor="k1", is_admin=False)
    back = await service.rollback("p", "production", actor="admin", is_admin=True)
    assert back == LabelMove("p", "production", 3, 2, "admin", t + 8, "rollback")
    assert await service.history("p", "production") == [
        back,
        LabelMove("p", "production", 2, 3, "admin", t + 4, "promote"),
        LabelMove("p", "production", 1, 2, "k1", t + 2, "promote"),
        first,
    ]
    summary, versions = await service.get_prompt("p")
    assert (summary.labels, summary.protected_labels) == ({"production": 2}, ("production",))
    assert [v.labels for v in versions] == [(), ("production",), ()]


async def test_label_errors(service: PromptService) -> None:
    await _three_versions(service)
    await service.move_label("p", "staging", 1, actor="k", is_admin=False)
    cases = [
        (service.rollback("p", "staging", actor="k", is_admin=False), 409, "no earlier version"),
        (service.rollback("p", "nope", actor="k", is_admin=False), 404, "has no label 'nope'"),
        (service.move_label("p", "staging", 9, actor="k", is_admin=False), 404, "no version 9"),
        (service.move_label("q", "staging", 1, actor="k", is_admin=False), 404, "unknown prompt"),
        (service.move_label("p", "Bad Label", 1, actor="k", is_admin=False), 400, "invalid label"),
        (service.resolve("p"), 404, "prompt 'p' has no label 'production'; labels: staging"),
        (service.resolve("p", version=7), 404, "prompt 'p' has no version 7"),
    ]
    for call, status, message in cases:
        with pytest.raises(PromptError) as caught:
            await call
        assert (caught.value.status, message in caught.value.message) == (status, True)


async def test_resolve_caches_and_sees_its_own_moves_and_rollbacks_at_once(
    db: Database, service: PromptService
) -> None:
    await _three_versions(service)
    await service.move_label("p", "production", 1, actor="k", is_admin=False)
    assert (await service.resolve("p")).version == 1
    await service.move_label("p", "production", 2, actor="k", is_admin=False)
    resolved = await service.resolve("p", label="production")
    assert (resolved.version, resolved.labels) == (2, ("production",))
    await service.rollback("p", "production", actor="k", is_admin=False)
    assert (await service.resolve("p")).version == 1
    assert (await service.resolve("p", version=3, label="production")).version == 3
    # Another process's move reaches this one when the label's cache entry expires.
    other = PromptService(db, clock=Clock())
    await other.move_label("p", "production", 3, actor="k", is_admin=False)
    assert (await service.resolve("p")).version == 1  # cached for label_ttl (60 s here)
    fresh = PromptService(db, label_ttl=0.01)
    assert (await fresh.resolve("p")).version == 3
    await other.rollback("p", "production", actor="k", is_admin=False)
    await asyncio.sleep(0.02)
    assert (await fresh.resolve("p")).version == 1


async def test_diff_and_events_of_label_moves(service: PromptService) -> None:
    await service.push(
        "p", chat("Be brief.", model="fast", temperature=0.2), message=None, author="k"
    )
    newer = dataclasses.replace(
        chat("Be brief.\nUse bullets.", model="fast", extra={"top_p": 1}),
        variables=["text", "tone"],
    )
    await service.push("p", newer, message=None, author="k")
    assert await service.diff("p", 1, 2) == {
        "prompt": "p",
        "from": 1,
        "to": 2,
        "template": "--- p v1\n+++ p v2\n@@ -1,2 +1,3 @@\n system: Be brief.\n+Use bullets.\n"
        " user: {{ text }}",
        "config": [
            {"key": "extra.top_p", "from": None, "to": 1},
            {"key": "temperature", "from": 0.2, "to": None},
        ],
        "variables": {"from": ["text"], "to": ["text", "tone"]},
    }
    await service.move_label("p", "production", 2, actor="admin", is_admin=True, protect=True)
    page, cursor = await service.events(limit=1)
    assert [{k: v for k, v in e.items() if k != "id"} for e in page] == [
        {
            "at": T0 + 3,
            "kind": "prompt.label_moved",
            "actor": "admin",
            "subject": "prompt:p",
            "data": {
                "prompt": "p",
                "label": "production",
                "from": None,
                "to": 2,
                "action": "promote",
            },
            "prev_hash": None,
            "hash": None,
        }
    ]
    rest, end = await service.events(cursor=cursor)
    assert [e["kind"] for e in rest] == ["prompt.label_protected", *["prompt.version_created"] * 2]
    assert end is None
