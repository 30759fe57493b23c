"""The gateway's OpenAI-compatible endpoints: chat completions, embeddings, model list.

Each request: authenticate -> read and check the body -> resolve the model -> call the provider
-> settle tokens and cost -> log the record -> answer. The record reaches the write-ahead log
before the status line is sent, so a call whose answer started is never lost.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson

from keel.cache import Cache
from keel.gateway.asgi import (
    Receive,
    Scope,
    Send,
    read_body,
    request_headers,
    send_error,
    send_json,
)
from keel.gateway.call import Call, meta_headers, require_model
from keel.gateway.chat import ChatEndpoint
from keel.gateway.dispatch import Dispatch
from keel.gateway.errors import GatewayError
from keel.gateway.limiting import LimitStep
from keel.gateway.metadata import TraceContext, parse_meta, parse_traceparent
from keel.gateway.models import ModelRouter, Target
from keel.gateway.prompting import PromptResolver
from keel.gateway.recorder import Recorder
from keel.keys.auth import Authenticator, AuthError, Principal, authorize_model
from keel.providers.base import (
    CallContext,
    EmbeddingResult,
    UpstreamError,
)
from keel.providers.client import Timeouts, UpstreamClient
from keel.records.model import RequestRecord
from keel.records.pipeline import LogFullError

__all__ = ["Gateway"]

log = logging.getLogger(__name__)

_LOG_FULL = GatewayError(
    503,
    "Keel's request log is full (the database is not keeping up or is down); retry shortly",
    type="service_unavailable",
    code="log_full",
    retry_after=5,
)


def _parse_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise GatewayError(400, "the request body must be a JSON object")
    return body


class Gateway:
    def __init__(
        self,
        router: ModelRouter,
        recorder: Recorder,
        authenticator: Authenticator,
        session: UpstreamClient,
        timeout: Timeouts,
        max_request_bytes: int,
        dispatch: Dispatch,
        prompts: PromptResolver | None = None,
        input_budgets: Mapping[str, int] | None = None,
        cache: Cache | None = None,
        limits: LimitStep | None = None,
    ) -> None:
        self.limits = limits
        self.input_budgets = dict(input_budgets or {})
        self.dispatch = dispatch
        self.router = router
        self.recorder = recorder
        self.auth = authenticator
        self.session = session
        # No single call may outlast the request's deadline across all its attempts.
        self.timeout = dataclasses.replace(timeout, total=min(timeout.total, dispatch.deadline_s))
        self.max_request_bytes = max_request_bytes
        self.prompts = prompts
        self.chat_endpoint = ChatEndpoint(self, cache)

    # -- shared steps -------------------------------------------------------------------------

    async def _principal(self, headers: dict[str, str]) -> Principal:
        try:
            return await self.auth.authenticate(headers.get("authorization"))
        except AuthError as exc:
            raise GatewayError(exc.status, exc.message, code="invalid_api_key") from None

    def context(
        self, record: RequestRecord, trace: TraceContext, headers: dict[str, str]
    ) -> CallContext:
        return CallContext(
            session=self.session,
            timeout=self.timeout,
            request_id=record.id,
            forward_headers={"traceparent": trace.traceparent()},
            client_headers=headers,
        )

    def plan(self, call: Call, model: str) -> list[Target]:
        """The targets for the requested model, if the caller's key may use it."""
        try:
            authorize_model(call.principal, model)
        except AuthError as exc:
            raise GatewayError(exc.status, exc.message, code="model_not_allowed") from None
        return self.dispatch.plan(model, call.record, call.headers_out)

    def bounded(self, ctx: CallContext, target: Target, timeout_s: float) -> CallContext:
        """`ctx` for one attempt at `target`. Routing's own timer already ends the attempt at
        `timeout_s`; the provider call carries the cut itself only where the target has a
        timeout of its own, so the common call makes no new context."""
        if target.timeout_s is None:
            return ctx
        return dataclasses.replace(ctx, timeout=dataclasses.replace(ctx.timeout, total=timeout_s))

    async def _answer_error(
        self, send: Send, record: RequestRecord, err: GatewayError, body: bytes, started: float
    ) -> None:
        self.recorder.fail(record, err)
        if err.status not in (401, 413):  # keep no bodies of unauthenticated or oversized calls
            self.recorder.payloads(record, body, None)
        try:
            self.recorder.commit(record, started)
        except LogFullError:
            self.recorder.metrics.log_full.inc()
        await send_error(send, err, meta_headers(record))

    async def _open(
        self, receive: Receive, headers: dict[str, str], record: RequestRecord
    ) -> tuple[Principal, bytes, dict[str, Any]]:
        """Authenticate, read and decode the body, and fill the record's metadata."""
        principal = await self._principal(headers)
        record.key_id = principal.key_id
        if not self.recorder.sink.has_room():
            self.recorder.metrics.log_full.inc()
            raise _LOG_FULL
        raw = await read_body(receive, self.max_request_bytes)
        body = _parse_object(raw)
        meta = parse_meta(headers, body, principal.customer)
        record.customer, record.pipeline, record.tags = meta.customer, meta.pipeline, meta.tags
        record.model = body["model"] if isinstance(body.get("model"), str) else None
        record.stream = body.get("stream") is True
        return principal, raw, body

    async def _guard(self, scope: Scope, receive: Receive, send: Send, endpoint: str) -> None:
        """Run one endpoint; any error becomes an OpenAI-shaped answer and a record."""
        started = time.perf_counter()
        headers = request_headers(scope)
        trace = parse_traceparent(headers.get("traceparent"))
        record = self.recorder.begin(
            endpoint, None, parse_meta(headers, {}, None), trace, None, False
        )
        raw = b""
        try:
            principal, raw, body = await self._open(receive, headers, record)
            call = Call(headers, trace, principal, record, raw, body, started)
            if endpoint == "chat.completions":
                await self.chat_endpoint.run(send, receive, call)
            else:
                await self._embeddings(send, call)
        except GatewayError as err:
            await self._answer_error(send, record, err, raw, started)
        except UpstreamError as exc:
            upstream = GatewayError(
                exc.status, exc.message, type=exc.type, code=exc.code, retry_after=exc.retry_after
            )
            await self._answer_error(send, record, upstream, raw, started)
        except LogFullError:
            self.recorder.metrics.log_full.inc()
            await send_error(send, _LOG_FULL, meta_headers(record))
        except Exception:
            log.exception("internal error in %s (request %s)", endpoint, record.id)
            internal = GatewayError(
                500,
                f"internal error in Keel (request {record.id}); the server log has the details",
                type="api_error",
            )
            await self._answer_error(send, record, internal, raw, started)

    # -- endpoints ----------------------------------------------------------------------------

    async def chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._guard(scope, receive, send, "chat.completions")

    async def embeddings(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._guard(scope, receive, send, "embeddings")

    async def models(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._principal(request_headers(scope))
        except GatewayError as err:
            await send_error(send, err)
            return
        body = orjson.dumps({"object": "list", "data": self.router.list_models()})
        await send_json(send, 200, body)

    async def _embeddings(self, send: Send, call: Call) -> None:
        body, record, started, raw = call.body, call.record, call.started, call.raw
        model = require_model(body)
        if not isinstance(body.get("input"), (str, list)) or not body["input"]:
            raise GatewayError(400, "`input` must be a non-empty string or list", param="input")
        plan = self.plan(call, model)
        ctx = self.context(record, call.trace, call.headers)

        async def attempt(target: Target, timeout_s: float) -> EmbeddingResult:
            upstream = {**body, "model": target.model}
            return await target.provider.embeddings(upstream, self.bounded(ctx, target, timeout_s))

        result, target = await self.dispatch.run(plan, record, attempt)
        record.provider_model = result.served_model or target.model
        record.status_code = 200
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        text = [{"role": "user", "content": i} for i in inputs if isinstance(i, str)]
        self.recorder.settle(
            record,
            result.usage,
            price_model=record.provider_model,
            provider_id=target.provider.price_provider_id(),
            messages=text,
            output_text="",
        )
        self.recorder.payloads(record, raw, None)
        self.recorder.commit(record, started)
        if self.recorder.durable:
            await self.recorder.sink.wait_durable()
        await send_json(send, 200, result.body, meta_headers(record) + call.headers_out)
