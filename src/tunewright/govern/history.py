"""Which adapter served an alias when: answered from the append-only alias history.

Each alias change is a row (and an audit event) that never changes afterwards, so the state at any
moment is the newest change at or before it. An adapter's history is the periods during which an
alias pointed at it (or split traffic to it), with who started and ended each period and why.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from ..errors import TunewrightError
from ..registry.deploy import ALIASES, AliasState, DeploymentStore, split_adapter_ref


@dataclass(frozen=True)
class Period:
    alias: str
    role: str  # "serves" or "split N%"
    start: AliasState
    end: AliasState | None  # None: still serving

    def as_dict(self) -> dict[str, Any]:
        def change(state: AliasState | None) -> dict[str, Any] | None:
            if state is None:
                return None
            return {"change_id": state.change_id, "action": state.action, "actor": state.actor,
                    "at": state.created_at.isoformat(timespec="seconds"), "reason": state.reason,
                    "evidence": state.evidence or {}}
        return {"alias": self.alias, "role": self.role, "from": change(self.start), "until": change(self.end)}


def parse_moment(text: str) -> tuple[dt.datetime, bool]:
    """An ISO date (meaning the end of that day, UTC) or date-time; returns (moment, was_a_date)."""
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            end = dt.datetime.combine(day, dt.time.max, tzinfo=dt.timezone.utc)
            return end, True
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise TunewrightError(f"'{text}' is not a date or time (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)",
                              field="at") from None
    return (moment.replace(tzinfo=dt.timezone.utc) if moment.tzinfo is None else moment), False


def _role(state: AliasState, adapter_id: int) -> str | None:
    if state.adapter is not None and state.adapter.id == adapter_id:
        return "serves" + (f" ({100 - state.split_percent}%)" if state.split_adapter is not None else "")
    if state.split_adapter is not None and state.split_adapter.id == adapter_id:
        return f"split {state.split_percent}%"
    return None


def adapter_periods(registry, ref: str) -> list[Period]:
    """Every period in which an alias routed requests to the adapter (all versions when none given)."""
    name, version = split_adapter_ref(ref)
    registry.get_adapter(name, version)  # an unknown adapter is a clear error, not an empty history
    wanted = {a.id for a in registry.list_adapters() if a.name == name and (version is None or a.version == version)}
    store = DeploymentStore(registry)
    periods: list[Period] = []
    for alias in ALIASES:
        open_period: tuple[int, str, AliasState] | None = None
        for state in store.history(alias):
            roles = {aid: _role(state, aid) for aid in wanted}
            current = next(((aid, role) for aid, role in roles.items() if role), None)
            if open_period and (current is None or current != open_period[:2]):
                periods.append(Period(alias, open_period[1], open_period[2], state))
                open_period = None
            if current and open_period is None:
                open_period = (current[0], current[1], state)
        if open_period:
            periods.append(Period(alias, open_period[1], open_period[2], None))
    return sorted(periods, key=lambda p: p.start.change_id)


def serving_at(registry, alias: str, moment: dt.datetime) -> AliasState | None:
    """The alias's state at ``moment``: its newest change at or before it."""
    state = None
    for change in DeploymentStore(registry).history(alias):
        if change.created_at <= moment:
            state = change
        else:
            break
    return state


def changes_between(registry, alias: str, start: dt.datetime, end: dt.datetime) -> list[AliasState]:
    return [c for c in DeploymentStore(registry).history(alias) if start <= c.created_at <= end]
