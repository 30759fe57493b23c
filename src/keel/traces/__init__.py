"""Traces: OTLP ingest (decode, map, accept durably) and the trace queries."""
