"""`POST /v1/traces`: OTLP/HTTP trace ingest, as a raw ASGI endpoint.

authenticate -> check the media type and encoding -> read the body (capped) -> decompress
(capped, incrementally: a gzip bomb stops at the cap) -> decode -> map (straight to rows of the
spans table) -> one write-ahead log entry for the whole export -> answer. The 200 goes out only
once the spans are in the log (and fsynced when `wal_fsync` is `always`): "accepted" means
durable. Answers follow the OTLP/HTTP spec: the response is encoded like the request, errors carry
a `google.rpc.Status`, invalid spans are reported in `partial_success`, a full log or a failing
disk answers 503 with Retry-After so exporters retry.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import orjson
from google.rpc.status_pb2 import Status  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from keel.gateway.asgi import Receive, Scope, Send
from keel.keys.auth import AuthError
from keel.records.pipeline import RecordPipeline
from keel.records.wal import LogFullError
from keel.traces.mapping import MappingOptions, fast_protobuf_rows, to_rows
from keel.traces.otlp import (
    FAST_DECODE,
    Decoded,
    Limits,
    MalformedExport,
    OtlpSpan,
    decode_json,
    protobuf_spans,
)

if TYPE_CHECKING:
    from keel.runtime import Runtime

__all__ = ["TraceIngest", "gunzip"]

log = logging.getLogger(__name__)

PROTOBUF, JSON = "protobuf", "json"
_MEDIA_TYPES = {
    "application/x-protobuf": PROTOBUF,
    "application/protobuf": PROTOBUF,
    "application/json": JSON,
}
_CONTENT_TYPES = {PROTOBUF: b"application/x-protobuf", JSON: b"application/json"}
_RETRY_AFTER_S = 5
_BACKPRESSURE_BYTES = 32 * 1024 * 1024  # log bytes waiting for the writer before exports wait
_BACKPRESSURE_POLLS = 400  # of 5 ms
_SLICE = 64  # spans decoded and mapped between two turns of the event loop (~2 ms)

# google.rpc.Code values for the Status body of an error
_CODES = {400: 3, 401: 16, 403: 7, 405: 12, 413: 8, 415: 3, 503: 14, 500: 13}


class IngestError(Exception):
    """An answer other than 200; `message` is for a person and never holds a credential."""

    def __init__(
        self, status: int, message: str, outcome: str, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.outcome = outcome  # the `keel_otlp_exports_total` label
        self.retry_after = retry_after


class BodyTooLarge(Exception):
    pass


def gunzip(data: bytes, limit: int, *, wbits: int = 31) -> bytes:
    """Decompress gzip (or zlib with wbits=15) `data`, refusing more than `limit` bytes.

    Raises BodyTooLarge past the limit (after producing at most limit + 1 bytes, so a bomb
    costs nothing), ValueError for a corrupt or truncated stream. Concatenated gzip members
    (which `gzip` tools write) are decompressed one after the other.
    """
    parts: list[bytes] = []
    size = 0
    rest = data
    while rest:
        inflater = zlib.decompressobj(wbits)
        pending = rest
        while pending:
            try:
                chunk = inflater.decompress(pending, limit + 1 - size)
            except zlib.error as exc:
                raise ValueError(f"the body is not valid {_encoding_name(wbits)}: {exc}") from None
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            parts.append(chunk)
            pending = inflater.unconsumed_tail
            if inflater.eof:
                break
        if not inflater.eof:
            tail = inflater.flush()
            size += len(tail)
            if size > limit:
                raise BodyTooLarge
            raise ValueError(f"the {_encoding_name(wbits)} body is truncated")
        rest = inflater.unused_data
        if wbits != 31:
            break
    return b"".join(parts)


def _encoding_name(wbits: int) -> str:
    return "gzip" if wbits == 31 else "deflate"


class TraceIngest:
    """The ASGI endpoint. Reads the runtime's pipeline and authenticator at each call (they
    exist once the runtime started)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        s = runtime.settings
        self.max_body = s.otlp_max_body_bytes
        self.max_decompressed = s.otlp_max_decompressed_bytes
        self.limits = Limits(
            max_value_length=s.otlp_max_attribute_length,
            max_attributes=s.otlp_max_attributes,
        )
        self.store_payloads = s.store_payloads
        self.payload_max = s.payload_max_bytes
        self.durable = s.wal_fsync == "always"
        self._accepted = runtime.metrics.otlp_spans_accepted
        self._rejected = runtime.metrics.otlp_spans_rejected
        self._exports: dict[str, Any] = {}  # outcome -> its counter child
        # Decompression (zlib lets go of the interpreter) and OTLP JSON decoding run here.
        # Protobuf bodies are decoded and mapped on the event loop: by the C fast path in one
        # go (about 6 µs a span: 3 ms for the SDK's batch of 512), else by the reference
        # decoder and mapped in slices of _SLICE spans. A thread shares the interpreter anyway,
        # and handing it back and forth cost a tenth more CPU per span (benchmarks/ingest.py),
        # while the slices keep the gateway's calls and the record writer moving between them.
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="keel-otlp-inflate")
        if not FAST_DECODE:
            log.warning(
                "the C extension keel.traces._otlp_wire is not built (Keel was installed without "
                "a C compiler): OTLP exports are decoded and mapped by the slower reference code"
            )

    def _count_export(self, outcome: str) -> None:
        child = self._exports.get(outcome)
        if child is None:  # a handful of fixed outcomes
            child = self._exports[outcome] = self.runtime.metrics.otlp_exports.labels(outcome)
        child.inc()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        fmt = _MEDIA_TYPES.get(headers.get("content-type", "").split(";", 1)[0].strip().lower())
        try:
            if scope["method"] != "POST":
                raise IngestError(405, "/v1/traces takes POST", "unsupported")
            opts = await self._authenticate(headers)
            if fmt is None:
                raise IngestError(
                    415,
                    "unsupported Content-Type: send application/x-protobuf or application/json",
                    "unsupported",
                )
            encoding = headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("identity", "", "gzip", "deflate"):
                raise IngestError(
                    415, f"unsupported Content-Encoding {encoding[:40]!r}: use gzip", "unsupported"
                )
            pipeline = self._pipeline()
            if not pipeline.has_room():
                self.runtime.metrics.log_full.inc()
                raise _log_full()
            await _let_the_writer_catch_up(pipeline)
            body = await self._read(receive)
            if body is None:
                return  # the client went away
            decoded, rows, count = await self._process(body, encoding, fmt, opts)
            self._submit(rows, count + decoded.rejected)
            if self.durable and rows:
                await self._pipeline().wait_durable()
        except IngestError as err:
            self._count_export(err.outcome)
            await _send_status(send, err, fmt or JSON)
            return
        except Exception:
            log.exception("internal error in OTLP ingest")
            self._count_export("internal")
            internal = IngestError(500, "internal error in Keel; the server log has details", "")
            await _send_status(send, internal, fmt or JSON)
            return
        self._accepted.inc(len(rows))
        if decoded.rejected:
            self._rejected.labels("invalid").inc(decoded.rejected)
        self._count_export("partial" if decoded.rejected else "accepted")
        await _send(send, 200, fmt, _success_body(fmt, decoded), [])

    # -- the steps ------------------------------------------------------------------------------

    def _pipeline(self) -> RecordPipeline:
        pipeline = self.runtime.pipeline
        if pipeline is None:
            raise IngestError(503, "Keel is starting; retry shortly", "unavailable", _RETRY_AFTER_S)
        return pipeline

    async def _authenticate(self, headers: dict[str, str]) -> MappingOptions:
        auth = self.runtime.authenticator
        if auth is None:
            raise IngestError(503, "Keel is starting; retry shortly", "unavailable", _RETRY_AFTER_S)
        try:
            principal = await auth.authenticate(headers.get("authorization"))
        except AuthError as exc:
            outcome = "unauthorized" if exc.status in (401, 403) else "unavailable"
            retry = _RETRY_AFTER_S if exc.status == 503 else None
            raise IngestError(exc.status, exc.message, outcome, retry) from None
        return MappingOptions(
            pricer=self.runtime.pricer,
            store_payloads=self.store_payloads,
            payload_max=self.payload_max,
            text_max=self.limits.max_value_length,
            customer=principal.customer,
        )

    async def _read(self, receive: Receive) -> bytes | None:
        parts: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise IngestError(
                    413,
                    f"the body is larger than {self.max_body} bytes "
                    "(setting otlp_max_body_bytes); send smaller batches",
                    "too_large",
                )
            parts.append(chunk)
            more = bool(message.get("more_body"))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _decompress(self, body: bytes, encoding: str) -> bytes:
        if encoding in ("identity", ""):
            if len(body) > self.max_decompressed:
                raise self._too_large_decompressed()
            return body
        try:
            return gunzip(body, self.max_decompressed, wbits=31 if encoding == "gzip" else 15)
        except BodyTooLarge:
            raise self._too_large_decompressed() from None
        except ValueError as exc:
            raise IngestError(400, str(exc), "malformed") from None

    def _too_large_decompressed(self) -> IngestError:
        return IngestError(
            413,
            f"the decompressed body is larger than {self.max_decompressed} bytes "
            "(setting otlp_max_decompressed_bytes); send smaller batches",
            "too_large",
        )

    def _decode(self, body: bytes, fmt: str, decoded: Decoded) -> Iterator[OtlpSpan]:
        try:
            if fmt == PROTOBUF:
                return protobuf_spans(body, self.limits, decoded)
            whole = decode_json(body, self.limits)  # in one piece: JSON is parsed whole
            decoded.rejected, decoded.errors = whole.rejected, whole.errors
            return iter(whole.spans)
        except MalformedExport as exc:
            raise IngestError(400, str(exc)[:1000], "malformed") from None
        except RecursionError:
            raise IngestError(400, "the body is nested too deeply", "malformed") from None

    async def _process(
        self, body: bytes, encoding: str, fmt: str, opts: MappingOptions
    ) -> tuple[Decoded, list[tuple[Any, ...]], int]:
        """Decompress, decode and map to the rows the record pipeline logs; also how many
        valid spans the export held (repeats included)."""
        loop = asyncio.get_running_loop()
        if encoding in ("identity", ""):
            data = self._decompress(body, encoding)
        else:
            data = await loop.run_in_executor(self._worker, self._decompress, body, encoding)
        decoded = Decoded()
        if fmt == PROTOBUF:
            fast = fast_protobuf_rows(data, self.limits, opts)  # decoded and mapped in C
            if fast is not None:
                return decoded, *fast
            spans = self._decode(data, fmt, decoded)  # by the reference, span by span
        else:  # JSON is decoded whole, by the worker
            spans = await loop.run_in_executor(self._worker, self._decode, data, fmt, decoded)
        rows: list[tuple[Any, ...]] = []
        seen: set[tuple[str, str]] = set()
        count = 0
        while True:
            taken = list(itertools.islice(spans, _SLICE))
            rows += to_rows(taken, opts, seen)  # a span repeated in the export: the first wins
            count += len(taken)
            if len(taken) < _SLICE:
                return decoded, rows, count
            await asyncio.sleep(0)  # let the loop run between slices

    def _submit(self, rows: list[tuple[Any, ...]], count: int) -> None:
        if not rows:
            return
        pipeline = self._pipeline()
        try:
            pipeline.submit_span_rows(rows)
        except LogFullError:
            self.runtime.metrics.log_full.inc()
            self._rejected.labels("unavailable").inc(count)
            raise _log_full() from None
        except OSError as exc:
            log.error("cannot append spans to the write-ahead log: %s", exc)
            self._rejected.labels("unavailable").inc(count)
            raise IngestError(
                503,
                "Keel cannot write its record log (disk error); retry shortly",
                "unavailable",
                _RETRY_AFTER_S,
            ) from None


async def _let_the_writer_catch_up(pipeline: RecordPipeline) -> None:
    """Hold an export (briefly) while the writer is far behind.

    Decoding exports and writing spans share one interpreter: under a flood of exports the
    writer would get ever less of it, its backlog and batches (and the memory and garbage
    collection they cost) would grow, and spans would reach the database ever later. Holding
    the next export a little instead slows the senders to what the database takes, which is
    TCP-like backpressure that OTLP exporters handle (their timeout is 10 s by default).
    """
    for _ in range(_BACKPRESSURE_POLLS):  # at most 2 s: a stuck writer must not stall senders
        if pipeline.pending_bytes <= _BACKPRESSURE_BYTES:
            return
        await asyncio.sleep(0.005)


def _log_full() -> IngestError:
    return IngestError(
        503,
        "Keel's record log is full (the database is not keeping up or is down); retry shortly",
        "unavailable",
        _RETRY_AFTER_S,
    )


# -- answers --------------------------------------------------------------------------------------


def _success_body(fmt: str, decoded: Decoded) -> bytes:
    if fmt == PROTOBUF:
        if not decoded.rejected:
            return b""
        partial = ExportTracePartialSuccess(
            rejected_spans=decoded.rejected, error_message=decoded.error_message
        )
        return bytes(ExportTraceServiceResponse(partial_success=partial).SerializeToString())
    if not decoded.rejected:
        return b"{}"
    return orjson.dumps(
        {
            "partialSuccess": {
                "rejectedSpans": str(decoded.rejected),  # int64: a string in proto3 JSON
                "errorMessage": decoded.error_message,
            }
        }
    )


async def _send_status(send: Send, err: IngestError, fmt: str) -> None:
    code = _CODES.get(err.status, 2)
    if fmt == PROTOBUF:
        body = bytes(Status(code=code, message=err.message).SerializeToString())
    else:
        body = orjson.dumps({"code": code, "message": err.message})
    extra = []
    if err.retry_after is not None:
        extra.append((b"retry-after", str(err.retry_after).encode()))
    if err.status == 405:
        extra.append((b"allow", b"POST"))
    await _send(send, err.status, fmt, body, extra)


async def _send(
    send: Send, status: int, fmt: str, body: bytes, extra: list[tuple[bytes, bytes]]
) -> None:
    headers = [
        (b"content-type", _CONTENT_TYPES[fmt]),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
