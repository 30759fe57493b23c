"""Alerts: rules on the analytics metrics, evaluated in the background, notified to webhooks.

`rules` (what a rule is, validation, redaction), `states` (the ok -> pending -> firing state
machine), `store` (rules and history in the database, compare-and-set transitions),
`notify` (webhook and Slack delivery with retries), `evaluator` (the background loop),
`notices` (budget threshold notices) and `service` (all of it for one running Keel).
See docs/alerts.md.
"""
