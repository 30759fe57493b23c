"""POST /v1/chat/completions: from a decoded call to the answer, plain or streamed.

prompt -> checks -> context trimming -> plan -> cache lookup -> provider along the plan ->
settle -> log -> answer -> cache store. A cached answer is served like a provider's, streamed
when the client asked for a stream, and recorded with what it saved.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

from keel.cache import Cache, CollectingStream, Lookup, ReplayStream, StreamCollector
from keel.cache.keys import parse_mode, tenant_of
from keel.gateway.asgi import Receive, Send, send_json
from keel.gateway.call import Call, meta_headers, require_model, usd_header
from keel.gateway.errors import GatewayError
from keel.gateway.models import Target
from keel.gateway.prompting import apply_prompt
from keel.gateway.streaming import SSE_HEADERS, relay
from keel.gateway.trimming import trim_messages
from keel.providers.base import CallContext, ChatResult, ChatStream
from keel.records.pipeline import LogFullError

if TYPE_CHECKING:
    from keel.gateway.handler import Gateway

__all__ = ["ChatEndpoint"]


def _check(body: dict[str, Any]) -> list[Any]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise GatewayError(400, "`messages` must be a non-empty list", param="messages")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise GatewayError(400, "`stream` must be true or false", param="stream")
    return messages


class ChatEndpoint:
    def __init__(self, gateway: Gateway, cache: Cache | None) -> None:
        self.gw = gateway
        self.recorder = gateway.recorder
        self.cache = cache

    async def run(self, send: Send, receive: Receive, call: Call) -> None:
        body, record = call.body, call.record
        if self.gw.prompts is not None:
            used = await apply_prompt(self.gw.prompts, body)
            if used is not None:
                record.prompt_name, record.prompt_version = used.prompt, used.version
                record.model = body["model"] if isinstance(body.get("model"), str) else None
                record.stream = body.get("stream") is True
        model = require_model(body)
        messages = _check(body)
        budget = self.gw.input_budgets.get(model)
        if budget is not None:
            body["messages"], dropped = trim_messages(messages, budget)
            record.trimmed_messages = dropped or None
        plan = self.gw.plan(call, model)
        limits = self.gw.limits
        admission = None
        if limits is not None:
            # Without a cache, every admitted request calls a provider: its budgets are reserved
            # in the rate limits' step (one atomic step, one round trip).
            admission = await limits.check(call, model, plan if self.cache is None else None)
        failed = True
        try:
            lookup = await self._lookup(call, plan)
            if lookup is not None and lookup.hit is not None:
                await self._serve_hit(send, receive, call, lookup)
            else:
                if limits is not None:
                    await limits.reserve(admission, call, plan)
                ctx = self.gw.context(record, call.trace, call.headers)
                if record.stream:
                    await self._stream(send, receive, call, plan, ctx, lookup)
                else:
                    await self._plain(send, call, plan, ctx, lookup)
            failed = False
        finally:
            if limits is not None:
                await limits.settle(admission, call, failed=failed)

    async def _lookup(self, call: Call, plan: list[Target]) -> Lookup | None:
        if self.cache is None:
            return None
        try:
            mode = parse_mode(call.headers.get("x-keel-cache"))
        except ValueError as exc:
            raise GatewayError(400, str(exc), param="x-keel-cache") from None
        lookup = await self.cache.lookup(
            call.body,
            tenant=tenant_of(call.principal.key_id, call.record.customer),
            model_key=",".join(f"{t.provider_name}/{t.model}" for t in plan),
            mode=mode,
        )
        call.record.cache_status = lookup.status
        call.headers_out.append((b"x-keel-cache", lookup.status.encode()))
        return lookup

    async def _plain(
        self, send: Send, call: Call, plan: list[Target], ctx: CallContext, lookup: Lookup | None
    ) -> None:
        body, record = call.body, call.record

        async def attempt(target: Target, timeout_s: float) -> ChatResult:
            upstream = {**body, "model": target.model}
            return await target.provider.chat(upstream, self.gw.bounded(ctx, target, timeout_s))

        result, target = await self.gw.dispatch.run(plan, record, attempt)
        record.provider_model = result.served_model or target.model
        record.status_code = 200
        self.recorder.settle(
            record,
            result.usage,
            price_model=record.provider_model,
            provider_id=target.provider.price_provider_id(),
            messages=body["messages"],
            output_text=result.output_text,
        )
        await self._answer(send, call, result.body)
        if lookup is not None and self.cache is not None:
            await self.cache.save(
                lookup,
                result.body,
                usage=result.usage,
                served_model=record.provider_model,
                provider=record.provider,
                cost_usd=record.cost_usd,
            )

    async def _answer(self, send: Send, call: Call, body: bytes) -> None:
        """Log the record (before the status line), then send the plain answer."""
        record = call.record
        record.latency_ms = (time.perf_counter() - call.started) * 1000.0
        self.recorder.payloads(record, call.raw, body.decode("utf-8", "replace"))
        self.recorder.commit(record, call.started)
        if self.recorder.durable:
            await self.recorder.sink.wait_durable()
        out = meta_headers(record) + call.headers_out
        if record.cost_usd is not None:
            out.append((b"x-keel-cost-usd", usd_header(record.cost_usd)))
        await send_json(send, 200, body, out)

    async def _serve_hit(self, send: Send, receive: Receive, call: Call, lookup: Lookup) -> None:
        hit, record = lookup.hit, call.record
        assert hit is not None
        record.provider, record.provider_model = hit.provider, hit.served_model
        record.cost_saved_usd = hit.cost_saved_usd
        record.status_code = 200
        self.recorder.settle_cached(record, hit.usage)
        if record.stream:
            stream = ReplayStream.for_request(hit, call.body)
            await self._relay(send, receive, call, stream, None, None)
        else:
            await self._answer(send, call, hit.response_bytes)

    async def _stream(
        self,
        send: Send,
        receive: Receive,
        call: Call,
        plan: list[Target],
        ctx: CallContext,
        lookup: Lookup | None,
    ) -> None:
        async def attempt(target: Target, timeout_s: float) -> ChatStream:
            # A stream's attempt ends once the upstream answered, before the first byte: a
            # failure until then falls back; after it, the stream ends with an error event.
            return await target.provider.stream_chat({**call.body, "model": target.model}, ctx)

        stream, target = await self.gw.dispatch.run(plan, call.record, attempt)
        await self._relay(send, receive, call, stream, target, lookup)

    async def _relay(
        self,
        send: Send,
        receive: Receive,
        call: Call,
        stream: ChatStream,
        target: Target | None,
        lookup: Lookup | None,
    ) -> None:
        """Stream to the client; `target` None means a cached answer (already settled)."""
        record = call.record
        collector = None
        if lookup is not None and self.cache is not None and target is not None:
            collector = StreamCollector(self.cache.max_entry_bytes)
            stream = CollectingStream(stream, collector)
        try:
            self.recorder.stub(record)
            if self.recorder.durable:
                await self.recorder.sink.wait_durable()
        except BaseException:
            await stream.aclose()
            raise
        headers = SSE_HEADERS + meta_headers(record) + call.headers_out
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        outcome = await relay(stream, receive, send, call.started)
        record.status_code = 200
        record.ttft_ms = outcome.ttft_ms
        if outcome.error is not None:
            record.error, record.error_type = outcome.error.message, outcome.error.type
        elif outcome.disconnected:
            record.error = f"the client disconnected after {outcome.chunks} chunks"
            record.error_type = "client_disconnected"
        if target is not None:
            record.provider_model = stream.served_model or target.model
            self.recorder.settle(
                record,
                stream.usage,
                price_model=record.provider_model,
                provider_id=target.provider.price_provider_id(),
                messages=call.body.get("messages"),
                output_text=stream.output_text,
            )
        content = orjson.dumps({"content": stream.output_text}).decode()
        self.recorder.payloads(record, call.raw, content)
        try:
            self.recorder.commit(record, call.started)
        except LogFullError:  # the stub already holds this call's record
            self.recorder.metrics.log_full.inc()
        clean = outcome.error is None and not outcome.disconnected
        if collector is not None and lookup is not None and self.cache is not None and clean:
            completion = collector.completion(stream.usage)
            if completion is not None:
                await self.cache.save(
                    lookup,
                    completion,
                    usage=stream.usage,
                    served_model=record.provider_model,
                    provider=record.provider,
                    cost_usd=record.cost_usd,
                )
