"""A Keel subprocess fronting a fake OpenAI upstream, shared by the gateway tests of a module."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.openai_upstream import FakeOpenAI
from tests.servers import KeelProcess, LoopThread

ADMIN_KEY = "keel-admin-test-key-0123456789"
UPSTREAM_KEY = "sk-upstream-very-secret-4242"


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture(scope="module")
def fake_upstream(loop_thread: LoopThread) -> Iterator[tuple[FakeOpenAI, str]]:
    fake = FakeOpenAI(api_key=UPSTREAM_KEY)
    base_url = loop_thread.run(fake.start())
    yield fake, base_url
    loop_thread.run(fake.stop())


def keel_config(upstream_url: str) -> dict[str, Any]:
    return {
        "providers": {
            "up": {"type": "openai", "base_url": upstream_url, "api_key": "env:TEST_UPSTREAM_KEY"}
        },
        "models": [{"name": "fast", "targets": [{"provider": "up", "model": "gpt-4o-mini"}]}],
        "upstream_read_timeout_s": 2,
        # These tests inject one fault after another into the same target; a breaker that
        # opened on them would hide the error mapping they check (tests/routing covers it).
        "breaker_failure_threshold": 1000,
    }


@pytest.fixture(scope="module")
def keel(
    tmp_path_factory: pytest.TempPathFactory, fake_upstream: tuple[FakeOpenAI, str]
) -> Iterator[KeelProcess]:
    data_dir: Path = tmp_path_factory.mktemp("keel")
    proc = KeelProcess(
        data_dir,
        keel_config(fake_upstream[1]),
        env={"KEEL_ADMIN_KEY": ADMIN_KEY, "TEST_UPSTREAM_KEY": UPSTREAM_KEY},
    )
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def client(keel: KeelProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{keel.url}/v1", api_key=ADMIN_KEY, max_retries=0, timeout=10)


def fetch_record(keel: KeelProcess, request_id: str, timeout: float = 10) -> dict[str, Any]:
    """The record of a request, once the background writer has put it in the database."""
    deadline = time.monotonic() + timeout
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    while time.monotonic() < deadline:
        resp = httpx.get(f"{keel.url}/api/v1/requests/{request_id}", headers=headers, timeout=5)
        if resp.status_code == 200:
            record: dict[str, Any] = resp.json()
            if record["final"]:
                return record
        time.sleep(0.05)
    raise AssertionError(f"record {request_id} never appeared")
