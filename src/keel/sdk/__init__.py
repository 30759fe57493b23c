"""Keel's client library for applications: prompts by name and label, cached and rendered locally.

```python
from keel.sdk import get_prompt

prompt = get_prompt("summarize")               # label "production"; KEEL_URL, KEEL_API_KEY
client.chat.completions.create(**prompt.openai_kwargs(audience="support", text=ticket))
```

Light on purpose: importing it loads httpx and Keel's renderer, never the server stack.
"""

from __future__ import annotations

import threading

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
    "get_prompt",
]

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
