"""The stream object of adapters that translate a provider's own events into OpenAI chunks.

Anthropic and Gemini differ in what their events mean, not in how a stream is driven: the
adapter's translator turns each upstream event into ready OpenAI frames and keeps the usage,
model and text seen so far; this class relays those frames and releases the connection.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Protocol

from keel.providers.base import Usage
from keel.providers.client import Response

__all__ = ["StreamTranslator", "TranslatedStream", "close_events"]


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
