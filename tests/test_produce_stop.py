"""How `finsent produce` stops: Ctrl-C/SIGTERM between client calls, and one deadline for the acknowledgements."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from finsent.commands.produce import Delivery
from finsent.replay import Headline, replay, stop_on_first_signal

HEADLINES = [Headline("Oil rises as OPEC cuts output", ()), Headline("Fed holds rates", ())]


def signal_self_after(seconds: float, signum: int = signal.SIGINT) -> threading.Timer:
    """Send this process a signal from another thread after `seconds` (it is handled on the main thread)."""
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signum))
    timer.start()
    return timer


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_the_first_signal_sets_stop_and_the_second_raises(signum: int) -> None:
    before = signal.getsignal(signum)
    with stop_on_first_signal() as stop:
        os.kill(os.getpid(), signum)
        wait_until(stop.is_set)
        assert stop.is_set()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signum)
            time.sleep(5)
    assert signal.getsignal(signum) is before


def test_a_signal_during_a_send_lets_the_send_finish_and_then_stops_the_replay() -> None:
    # The send stands in for a kafka-python call: an interrupt inside one can leave a lock held.
    entered, finished = [], []

    def send(message: dict[str, Any]) -> None:
        entered.append(message["id"])
        time.sleep(0.5)  # the signal arrives in here
        finished.append(message["id"])

    with stop_on_first_signal() as stop:
        timer = signal_self_after(0.2)
        sent = replay(send, HEADLINES, source="t", loop=True, stop=stop)
        timer.join()
    assert stop.is_set()
    assert entered == finished and sent == len(finished) == 1


def test_a_stop_wakes_a_slow_replay_at_once() -> None:
    stop = threading.Event()
    sent: list[dict[str, Any]] = []
    worker = threading.Thread(
        target=replay,
        args=(sent.append, HEADLINES),
        kwargs={"source": "t", "rate": 0.01, "loop": True, "stop": stop},
        daemon=True,
    )
    worker.start()
    wait_until(lambda: len(sent) == 1)
    stop.set()
    worker.join(2)  # the next message is 100 s away
    assert not worker.is_alive() and len(sent) == 1


class FakeFuture:
    """The part of kafka-python's send future that Delivery uses."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[Any], None]] = []
        self.errbacks: list[Callable[[BaseException], None]] = []

    def add_callback(self, callback: Callable[[Any], None]) -> None:
        self.callbacks.append(callback)

    def add_errback(self, errback: Callable[[BaseException], None]) -> None:
        self.errbacks.append(errback)

    def acknowledge(self) -> None:
        for callback in self.callbacks:
            callback(None)

    def refuse(self, error: BaseException) -> None:
        for errback in self.errbacks:
            errback(error)


def test_the_flush_timeout_bounds_the_whole_wait_not_each_batch() -> None:
    delivery, futures = Delivery(), [FakeFuture() for _ in range(10)]
    for future in futures:
        delivery.track(future)

    def answer_one_every_300_ms() -> None:
        for future in futures:
            time.sleep(0.3)
            future.acknowledge()

    answering = threading.Thread(target=answer_one_every_300_ms, daemon=True)
    answering.start()
    started = time.monotonic()
    assert not delivery.wait_answered(1.0)
    assert time.monotonic() - started < 1.5
    assert 0 < delivery.acked < 10
    answering.join(10)
    assert delivery.wait_answered(5.0) and delivery.acked == 10


def test_a_refused_message_counts_as_answered_and_keeps_its_error() -> None:
    delivery, kept, refused = Delivery(), FakeFuture(), FakeFuture()
    delivery.track(kept)
    delivery.track(refused)
    kept.acknowledge()
    refused.refuse(RuntimeError("broker gone"))
    assert delivery.wait_answered(0.1)
    assert (delivery.acked, delivery.failed) == (1, 1)
    assert delivery.error == "RuntimeError: broker gone"
