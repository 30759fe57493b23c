"""The alerts page (`/alerts`): every rule with its state, and the latest events.

It reads through `keel.alerts.store`, whose dicts carry channel URLs already redacted.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from keel.alerts import store as alert_store
from keel.runtime import Runtime
from keel.ui.params import PageError, database, error_page
from keel.ui.templating import render

__all__ = ["AlertsPage"]

EVENTS_SHOWN = 100


class AlertsPage:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def alerts(self, request: Request) -> Response:
        """`/alerts`: rules (state, last value, threshold, channels) and the history."""
        try:
            db = database(self.runtime)
        except PageError as exc:
            return error_page(request, exc)
        rules = await alert_store.list_rules(db)
        events = await alert_store.list_events(db, limit=EVENTS_SHOWN)
        firing = sum(1 for r in rules if r["state"] == "firing")
        context = {"rules": rules, "events": events, "firing": firing, "shown": EVENTS_SHOWN}
        return render(request, "alerts/alerts.html", context)
