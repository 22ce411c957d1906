"""A stop request: a flag safe to set from a signal handler, and the deadline it puts on what is left."""

from __future__ import annotations

import threading
from collections.abc import Callable


class StopRequest:
    """Whether a stop was asked for, and by when the waits it leaves (acknowledgements, a commit) must end."""

    def __init__(self, grace_s: float, clock: Callable[[], float]) -> None:
        self._event = threading.Event()
        self._grace_s = grace_s
        self._clock = clock
        self.deadline = float("inf")

    def request(self) -> None:
        """Ask to stop; the first request sets the deadline `grace_s` from now."""
        if not self._event.is_set():
            self.deadline = self._clock() + self._grace_s
        self._event.set()

    @property
    def requested(self) -> bool:
        """Whether a stop was asked for."""
        return self._event.is_set()

    def wait(self, seconds: float) -> None:
        """Sleep for `seconds`, cut short by a stop request."""
        self._event.wait(seconds)
