"""Costs: pricing calls in USD and counting tokens offline when a provider reports none."""

from keel.costs.pricing import Cost, CostSource, Pricer
from keel.costs.tokens import count_messages, count_text, estimate_usage

__all__ = ["Cost", "CostSource", "Pricer", "count_messages", "count_text", "estimate_usage"]
