"""Scores: a number, a boolean or a label judging a trace or one span of it."""
