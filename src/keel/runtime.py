"""Everything one Keel process holds while it runs, started and stopped in order."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Sequence
from pathlib import Path

from keel.alerts.service import AlertService
from keel.config import ProviderConfig, Settings, header_pairs
from keel.controls import Controls
from keel.costs.pricing import Pricer
from keel.gateway.dispatch import Dispatch
from keel.gateway.handler import Gateway
from keel.gateway.lifecycle import Lifecycle
from keel.gateway.models import ModelRouter
from keel.gateway.recorder import Recorder
from keel.gateway.routing import Router
from keel.keys.auth import Authenticator
from keel.metrics import Metrics
from keel.prompts.service import PromptService
from keel.providers.base import Provider
from keel.providers.client import Timeouts, UpstreamClient
from keel.providers.registry import load_registry
from keel.records.model import RequestRecord
from keel.records.pipeline import RecordPipeline
from keel.storage.batch import Row
from keel.storage.database import Database
from keel.storage.span_writer import SpanWriterProcess
from keel.traces.export import SpanExporter

__all__ = ["Runtime"]

log = logging.getLogger(__name__)

_KEY_REFRESH_S = 5.0


def build_providers(settings: Settings) -> dict[str, Provider]:
    registry = load_registry()
    configs = list(settings.providers)
    if not any(c.name == "mock" for c in configs):
        configs.append(ProviderConfig(name="mock", type="mock"))
    return {c.name: registry.create(c) for c in configs}


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.providers = build_providers(settings)
        self.router = ModelRouter(self.providers, settings.models)
        self.pricer = Pricer(settings.prices)
        self.routing = Router.from_settings(settings, self.router, self.pricer)
        self.lifecycle = Lifecycle(settings.deprecations, count=self.metrics.count_deprecated)
        self.metrics.bind_breakers(self.routing.breakers.gauge)
        self.controls = Controls(settings, self.pricer)
        self.metrics.bind_counters(self.controls.counters)
        self.db: Database | None = None
        self.pipeline: RecordPipeline | None = None
        self.exporter: SpanExporter | None = None  # Keel's own spans to the operator's collector
        self.authenticator: Authenticator | None = None
        self.gateway: Gateway | None = None
        self.prompts: PromptService | None = None
        self.alerts: AlertService | None = None
        self._client: UpstreamClient | None = None
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        s = self.settings
        Path(s.data_dir).mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, at start
        self.db = await Database.open(s.resolved_database_url)
        self.prompts = PromptService(self.db)
        if s.otlp_export_url:
            self.exporter = SpanExporter(
                s.otlp_export_url,
                headers=header_pairs(s.otlp_export_headers),
                service_name=s.otlp_export_service_name,
            )
            await self.exporter.start()
        self.pipeline = RecordPipeline(
            s.data_dir,
            self.db,
            max_bytes=s.wal_max_bytes,
            segment_bytes=s.wal_segment_bytes,
            fsync=s.wal_fsync,
            fsync_interval_ms=s.wal_fsync_interval_ms,
            batch_size=s.writer_batch_size,
            linger_ms=s.writer_linger_ms,
            on_written=self._export if self.exporter is not None else None,
            span_writer=self._span_writer(),
        )
        await self.pipeline.start()
        p = self.pipeline
        self.metrics.bind_pipeline(
            lambda: p.pending_records,
            lambda: p.written_records,
            lambda: p.lost_records,
            lambda: 1.0 if p.db_up else 0.0,
        )
        self.authenticator = Authenticator(self.db.engine, s.admin_key)
        await self.authenticator.start()
        self._refresher = asyncio.create_task(self._refresh_keys())
        self._client = UpstreamClient()
        timeout = Timeouts(
            connect=s.upstream_connect_timeout_s,
            read=s.upstream_read_timeout_s,
            total=s.upstream_total_timeout_s,
        )
        await self.controls.start(self.db, self.authenticator, self.router, self._client, timeout)
        recorder = Recorder(
            self.pipeline,
            self.pricer,
            self.metrics,
            store_payloads=s.store_payloads,
            payload_max_bytes=s.payload_max_bytes,
            durable=s.wal_fsync == "always",
        )
        self.gateway = Gateway(
            self.router,
            recorder,
            self.authenticator,
            self._client,
            timeout,
            s.max_request_bytes,
            Dispatch(self.routing, self.lifecycle, s.request_deadline_s),
            prompts=self.prompts,
            input_budgets={
                m.name: m.max_input_tokens for m in s.models if m.max_input_tokens is not None
            },
            cache=self.controls.cache,
            limits=self.controls.limit_step,
        )
        self.alerts = AlertService.from_settings(self.db, s)
        await self.alerts.start()
        # Everything loaded so far (price book, tokenizer tables, modules) lives as long as the
        # process: move it out of the collector's sight so full collections stop rescanning it
        # on the request path.
        gc.collect()
        gc.freeze()

    def _span_writer(self) -> SpanWriterProcess | None:
        assert self.db is not None
        path = self.db.sqlite_path
        if path is None or not self.settings.sqlite_writer_process:
            return None
        return SpanWriterProcess(path)

    def _export(self, rows: Sequence[Row]) -> None:
        assert self.exporter is not None
        self.exporter.offer(r for r in rows if isinstance(r, RequestRecord))

    async def _refresh_keys(self) -> None:
        # Keys created or revoked by another replica become visible within this interval.
        assert self.authenticator is not None
        while True:
            await asyncio.sleep(_KEY_REFRESH_S)
            try:
                await self.authenticator.refresh()
            except Exception as exc:  # the database may be down; keep the cached keys
                log.warning("could not refresh API keys: %s", type(exc).__name__)

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self.alerts is not None:
            await self.alerts.stop()
        await self.controls.stop()
        if self._client is not None:
            await self._client.close()
        if self.pipeline is not None:
            await self.pipeline.stop()
        if self.exporter is not None:
            await self.exporter.stop()
        if self.db is not None:
            await self.db.close()
