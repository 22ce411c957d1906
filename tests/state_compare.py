"""Monitor states compared as values: the dedupe memory is a set, saved in no particular order."""

from typing import Any


def comparable_state(state: dict[str, Any]) -> dict[str, Any]:
    """A copy of a Monitor.to_state() result with each dedupe bucket's ids sorted."""
    dedupe = state["dedupe"]
    buckets = [[index, sorted(ids)] for index, ids in dedupe["buckets"]]
    return {**state, "dedupe": {**dedupe, "buckets": buckets}}
