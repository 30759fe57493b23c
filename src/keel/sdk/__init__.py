"""Keel's client library for applications: prompts by name and label, cached and rendered locally.

```python
from keel.sdk import get_prompt

prompt = get_prompt("summarize")               # label "production"; KEEL_URL, KEEL_API_KEY
client.chat.completions.create(**prompt.openai_kwargs(audience="support", text=ticket))
```

Tracing (docs/sdk.md): `init()` sends spans to Keel over OTLP, `@observe` traces a function,
`context(session_id=..., user_id=...)` labels the spans inside a block, and calls made with the
openai package become LLM spans linked to Keel's gateway spans.

Light on purpose: importing it loads httpx and Keel's renderer, never the server stack; the
tracing names load OpenTelemetry on first use.
"""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING, Any

from keel.sdk.prompts import (
    AsyncPromptClient,
    KeelError,
    Prompt,
    PromptClient,
    PromptNotFound,
    PromptUnavailable,
)

__all__ = [
    "AsyncPromptClient",
    "KeelError",
    "Prompt",
    "PromptClient",
    "PromptNotFound",
    "PromptUnavailable",
    "context",
    "flush",
    "get_prompt",
    "init",
    "instrument_openai",
    "observe",
    "shutdown",
    "uninstrument_openai",
]

if TYPE_CHECKING:
    from keel.sdk.observing import observe
    from keel.sdk.openai_instrument import instrument_openai, uninstrument_openai
    from keel.sdk.scope import context
    from keel.sdk.tracing import flush, init, shutdown

# Tracing names load OpenTelemetry only when first used (PEP 562).
_LAZY = {
    "context": "keel.sdk.scope",
    "flush": "keel.sdk.tracing",
    "init": "keel.sdk.tracing",
    "instrument_openai": "keel.sdk.openai_instrument",
    "observe": "keel.sdk.observing",
    "shutdown": "keel.sdk.tracing",
    "uninstrument_openai": "keel.sdk.openai_instrument",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'keel.sdk' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


_default: PromptClient | None = None
_default_lock = threading.Lock()


def _default_client() -> PromptClient:
    global _default
    with _default_lock:
        if _default is None:
            _default = PromptClient()
        return _default


def get_prompt(name: str, *, label: str = "production", version: int | None = None) -> Prompt:
    """A prompt from the Keel at KEEL_URL (key KEEL_API_KEY), through one shared PromptClient."""
    return _default_client().get(name, label=label, version=version)
