"""Keel: a self-hosted LLMOps platform (gateway, durable request log, observability)."""

__version__ = "0.1.0"
__all__ = ["__version__"]
