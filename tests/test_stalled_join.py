"""rejoin_if_stalled: asks for a new join only when a finished join will never be applied."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from ingest.stalled_join import rejoin_if_stalled


class Coordinator:
    """The few kafka-python coordinator attributes the check reads."""

    def __init__(self, *, rejoining: bool, join_done: bool | None, needs_rejoin: bool) -> None:
        self.rejoining = rejoining
        self._join_task = None if join_done is None else SimpleNamespace(is_done=join_done)
        self.needs_rejoin = needs_rejoin
        self.rejoin_requests = 0

    def need_rejoin(self) -> bool:
        return self.needs_rejoin

    def request_rejoin(self) -> None:
        self.rejoin_requests += 1


def test_a_finished_join_nobody_will_apply_is_restarted() -> None:
    coordinator = Coordinator(rejoining=True, join_done=True, needs_rejoin=False)
    assert rejoin_if_stalled(SimpleNamespace(_coordinator=coordinator))
    assert coordinator.rejoin_requests == 1


@pytest.mark.parametrize(
    ("rejoining", "join_done", "needs_rejoin"),
    [
        (True, False, False),  # the join is still waiting for the broker
        (True, True, True),  # the next poll applies it
        (False, None, False),  # a member at rest
        (False, True, False),  # no rebalance under way
        (True, None, False),  # a join not started yet
    ],
)
def test_everything_else_is_left_alone(rejoining: bool, join_done: bool | None, needs_rejoin: bool) -> None:
    coordinator = Coordinator(rejoining=rejoining, join_done=join_done, needs_rejoin=needs_rejoin)
    assert not rejoin_if_stalled(SimpleNamespace(_coordinator=coordinator))
    assert coordinator.rejoin_requests == 0


@pytest.mark.parametrize(
    "consumer", [SimpleNamespace(), SimpleNamespace(_coordinator=SimpleNamespace()), object()]
)
def test_a_client_without_these_internals_is_left_alone(consumer: Any) -> None:
    assert not rejoin_if_stalled(consumer)
