"""The state machine of one alert rule: ok -> pending -> firing -> ok, a pure function.

- ok, condition true: pending since now (firing at once when `for_s` is 0);
- pending, condition true for `for_s` seconds: firing (notify "firing");
- pending, condition false: back to ok, silently (it never fired);
- firing, condition false: ok (notify "resolved");
- otherwise the state stays, and nothing is notified: a rule that stays firing notifies once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from keel.alerts.rules import State

__all__ = ["Step", "step"]


@dataclass(frozen=True, slots=True)
class Step:
    state: State
    since: float | None
    notify: Literal["firing", "resolved"] | None = None

    def changed(self, state: str, since: float | None) -> bool:
        return (self.state, self.since) != (state, since)


def step(state: State, since: float | None, holds: bool, now: float, for_s: float) -> Step:
    """The next state of a rule in `state` (entered at `since`) whose condition `holds` now."""
    if holds:
        if state == "firing":
            return Step("firing", since)
        start = since if state == "pending" and since is not None else now
        if now - start >= for_s:
            return Step("firing", now, "firing")
        return Step("pending", start)
    if state == "firing":
        return Step("ok", now, "resolved")
    if state == "pending":
        return Step("ok", now)
    return Step("ok", since)
