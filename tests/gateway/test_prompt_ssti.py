"""The SSTI corpus against a running Keel, on every path that renders: save (push), the
playground's render route, and the gateway (with a payload planted in the database behind
Keel's back, since saving refuses it). Nothing may run: no payload's marker file appears."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import pytest

from tests.fakes.openai_upstream import FakeOpenAI
from tests.gateway.conftest import ADMIN_KEY
from tests.prompts.ssti_payloads import RUNTIME, STATIC
from tests.servers import KeelProcess

pytestmark = pytest.mark.timeout(120)

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}
PAYLOADS = {**STATIC, **RUNTIME}


def _messages(template: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": template}]


def test_every_payload_is_refused_on_every_render_path(
    keel: KeelProcess, tmp_path: Path, fake_upstream: tuple[FakeOpenAI, str]
) -> None:
    marker = tmp_path / "pwned"
    seen_upstream = len(fake_upstream[0].requests)
    with httpx.Client(base_url=keel.url, headers=AUTH, timeout=30) as http:
        for number, (name, payload) in enumerate(PAYLOADS.items()):
            template = payload.replace("MARKER", str(marker))
            if name in STATIC:  # RUNTIME payloads are valid templates: they fail while rendering
                saved = http.post(
                    "/api/v1/prompts",
                    json={"name": f"evil-{number}", "messages": _messages(template)},
                )
                assert saved.status_code == 400, (name, saved.text)
            preview = http.post(
                "/api/v1/prompts/render",
                json={"content": {"messages": _messages(template)}, "variables": {"x": "yy"}},
            )
            assert preview.status_code == 400, (name, preview.text)

            prompt = f"planted-{number}"
            pushed = http.post(
                "/api/v1/prompts",
                json={
                    "name": prompt,
                    "messages": _messages("harmless {{ x }}"),
                    "variables": ["x"],
                },
            )
            assert pushed.status_code == 201
            http.put(f"/api/v1/prompts/{prompt}/labels/production", json={"version": 1})
            _plant(keel.data_dir / "keel.db", prompt, template)
            called = http.post(
                "/v1/chat/completions",
                json={
                    "model": "fast",
                    "messages": [],
                    "prompt": {"name": prompt, "variables": {"x": "yy"}},
                },
            )
            assert called.status_code == 400, (name, called.text)
            assert called.json()["error"]["param"] == "prompt"
    assert not marker.exists()
    assert len(fake_upstream[0].requests) == seen_upstream  # nothing reached a provider


def _plant(database: Path, prompt: str, template: str) -> None:
    """Overwrite a saved version's template directly in the database."""
    with sqlite3.connect(database) as conn:
        (prompt_id,) = conn.execute("SELECT id FROM prompts WHERE name = ?", (prompt,)).fetchone()
        conn.execute(
            "UPDATE prompt_versions SET messages = ?, variables = NULL WHERE prompt_id = ?",
            (json.dumps(_messages(template)), prompt_id),
        )
