"""keel.sdk.init() in a fresh interpreter, exporting OTLP/HTTP to a real receiver on loopback.

Each case runs in a subprocess: OpenTelemetry's global provider can be set once per process,
and the flush at interpreter exit is part of what is checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

pytestmark = pytest.mark.timeout(60)

KEY = "sk-keel-export-test-0123"


@dataclass
class Receiver:
    url: str
    posts: list[tuple[str, dict[str, str], ExportTraceServiceRequest]] = field(default_factory=list)

    def spans(self) -> list[dict[str, Any]]:
        """Every span received: name, ids as hex, attributes, and its resource's attributes."""
        out = []
        for _, _, request in self.posts:
            for rs in request.resource_spans:
                resource = {a.key: a.value.string_value for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        attrs = {a.key: a.value.string_value for a in span.attributes}
                        out.append(
                            {
                                "name": span.name,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent": span.parent_span_id.hex() or None,
                                "attributes": attrs,
                                "resource": resource,
                                "scope": ss.scope.name,
                            }
                        )
        return out


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    posts: list[tuple[str, dict[str, str], ExportTraceServiceRequest]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            headers = {k.lower(): v for k, v in self.headers.items()}
            posts.append((self.path, headers, request))
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Receiver(f"http://127.0.0.1:{server.server_address[1]}", posts)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def run_app(code: str, env: dict[str, str]) -> Any:
    """Run `code` in a fresh interpreter; it prints one JSON value last."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OTEL_"))}
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_env_defaults_protobuf_auth_and_flush_at_exit(receiver: Receiver) -> None:
    result = run_app(
        """
        import json
        from opentelemetry import trace
        import keel.sdk

        state = keel.sdk.init(service_name="billing-app", environment="staging")

        @keel.sdk.observe
        def step(x):
            # an app's own OpenTelemetry span, through the global provider Keel set
            with trace.get_tracer("app").start_as_current_span("manual"):
                return x + 1

        step(1)
        print(json.dumps({"owns_global": state.owns_global, "url": state.url}))
        # no flush: the atexit hook sends the batch
        """,
        {"KEEL_URL": receiver.url + "/", "KEEL_API_KEY": KEY},
    )
    assert result == {"owns_global": True, "url": receiver.url}
    assert len(receiver.posts) == 1
    path, headers, _ = receiver.posts[0]
    assert path == "/v1/traces"
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["content-type"] == "application/x-protobuf"
    step, manual = sorted(receiver.spans(), key=lambda s: s["name"] != "step")
    assert step["resource"]["service.name"] == "billing-app"
    assert step["resource"]["deployment.environment.name"] == "staging"
    assert (step["scope"], step["attributes"]["keel.span.kind"]) == ("keel.sdk", "chain")
    assert (manual["scope"], manual["parent"], manual["trace_id"]) == (
        "app",
        step["span_id"],
        step["trace_id"],
    )


def test_an_apps_own_global_provider_is_left_alone(receiver: Receiver) -> None:
    result = run_app(
        """
        import json, os
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        import keel.sdk

        app_spans = InMemorySpanExporter()
        app_provider = TracerProvider()
        app_provider.add_span_processor(SimpleSpanProcessor(app_spans))
        trace.set_tracer_provider(app_provider)

        state = keel.sdk.init(url=os.environ["APP_KEEL"], api_key=os.environ["APP_KEY"])

        @keel.sdk.observe(kind="tool")
        def lookup():
            return "found"

        with trace.get_tracer("app").start_as_current_span("request") as request:
            lookup()
        keel.sdk.flush()
        ctx = request.get_span_context()
        print(json.dumps({
            "global_is_app": trace.get_tracer_provider() is app_provider,
            "owns_global": state.owns_global,
            "app_spans": [s.name for s in app_spans.get_finished_spans()],
            "request": [format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")],
        }))
        """,
        {"APP_KEEL": receiver.url, "APP_KEY": KEY},
    )
    assert result["global_is_app"] is True and result["owns_global"] is False
    assert result["app_spans"] == ["request"]  # Keel's spans do not go to the app's exporter
    (lookup,) = receiver.spans()
    # Keel's span still nests under the app's active span (one context for both providers)
    assert [lookup["name"], lookup["trace_id"], lookup["parent"]] == ["lookup", *result["request"]]
