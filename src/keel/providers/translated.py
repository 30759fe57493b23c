"""What the adapters that translate to and from OpenAI's format (Anthropic, Gemini) share.

They differ in what their events and fields mean, not in how a stream is driven: the adapter's
translator turns each upstream event into ready OpenAI frames and keeps the usage, model and
text seen so far; `open_translated` reads up to the first frame (so an early error is a real
HTTP error) and `TranslatedStream` relays the rest and releases the connection.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Protocol

import orjson

from keel.providers.base import Usage
from keel.providers.client import Response
from keel.providers.http import iter_sse

__all__ = [
    "StreamTranslator",
    "TranslatedStream",
    "close_events",
    "open_translated",
    "tool_arguments",
]


class StreamTranslator(Protocol):
    @property
    def usage(self) -> Usage | None: ...

    @property
    def model(self) -> str | None: ...

    @property
    def texts(self) -> list[str]: ...

    def feed(self, data: bytes) -> list[bytes]:
        """Frames for one upstream event (raise UpstreamError for an error event)."""
        ...

    @property
    def done(self) -> bool:
        """True once the upstream said the message is complete (stop reading)."""
        ...

    def finish(self) -> list[bytes]:
        """Frames after the last event; raise UpstreamError if the stream ended early."""
        ...


def tool_arguments(raw: Any) -> dict[str, Any] | None:
    """An OpenAI tool call's `arguments` (a JSON string) as an object; None if it is not one."""
    if isinstance(raw, dict):
        return raw
    if raw in (None, ""):
        return {}
    try:
        parsed = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError):
        return None
    return parsed if isinstance(parsed, dict) else None


async def open_translated(
    resp: Response, provider: str, translator: StreamTranslator
) -> TranslatedStream:
    """Read up to the first event with something to say, so an early error raises here."""
    events = iter_sse(resp, provider)
    try:
        pending: list[bytes] = []
        async for _event, data in events:
            pending = translator.feed(data)
            if pending or translator.done:
                break
        else:
            pending = translator.finish()
    except BaseException:
        await close_events(events)
        resp.release()
        raise
    return TranslatedStream(resp, events, translator, pending)


async def close_events(events: AsyncIterator[tuple[str, bytes]]) -> None:
    # iter_sse is an async generator; closing it now beats leaving it to the garbage collector
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()


class TranslatedStream:
    """An open upstream stream, already past its first event (a ChatStream)."""

    def __init__(
        self,
        resp: Response,
        events: AsyncIterator[tuple[str, bytes]],
        translator: StreamTranslator,
        pending: list[bytes],
    ) -> None:
        self._resp = resp
        self._events = events
        self._translator = translator
        self._pending = pending
        self.usage: Usage | None = translator.usage
        self.served_model: str | None = translator.model
        self.output_text = ""
        self._frames = self._run()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._frames

    async def _run(self) -> AsyncGenerator[bytes, None]:
        try:
            for frame in self._pending:
                yield frame
            async for _event, data in self._events:
                frames = self._translator.feed(data)
                self._sync()
                for frame in frames:
                    yield frame
                if self._translator.done:
                    return
            for frame in self._translator.finish():
                yield frame
        finally:
            self._sync()
            await close_events(self._events)
            self._resp.release()

    def _sync(self) -> None:
        self.usage = self._translator.usage
        self.served_model = self._translator.model
        self.output_text = "".join(self._translator.texts)

    async def aclose(self) -> None:
        await self._frames.aclose()
        await close_events(self._events)
        self._resp.release()
