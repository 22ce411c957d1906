"""The delivery pass: a wall clock that steps back, undecodable rows, removed subscriptions, one thread each."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from alerts import AlertEngine, AlertEvent, DeliveryError, Dispatcher, Subscription
from alerts.outbox import OutboxRow
from tests.test_alerts_delivery import Clock, Observer, Receiver, fire, hook, resolve
from tests.test_alerts_engine import rule, snap


class SteppingBack:
    """A receiver that is down; while each attempt is in flight NTP steps the wall clock back 10 s."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls = 0

    def send(self, subscription: Subscription, event: AlertEvent, now: float) -> None:
        self.calls += 1
        self.clock.now -= 10
        raise DeliveryError("HTTP 503 from receiver")

    def close(self) -> None:
        pass


def test_a_clock_stepping_back_during_an_attempt_does_not_spin_the_pass(tmp_path: Path) -> None:
    clock = Clock()
    sender = SteppingBack(clock)
    engine, event = fire("Macro")
    events = [event, *engine.evaluate([snap("IPO", end=1_799_999_000.0)], 1_799_999_000.0)]
    with Dispatcher(
        [hook("http://x/")], tmp_path / "outbox.db", clock=clock, senders={"webhook": sender}
    ) as d:
        d.record(events, engine.to_state())
        due = d.outbox.due
        passes: list[float] = []

        def counted_due(subscription: str, now: float, limit: int = 100) -> list[OutboxRow]:
            passes.append(now)
            if len(passes) > 50:  # the bug: the same pass finds the same rows due forever
                raise RuntimeError("the delivery pass does not end")
            return due(subscription, now, limit)

        d.outbox.due = counted_due  # type: ignore[method-assign]
        pass_now = clock.now
        worker = threading.Thread(target=d.deliver_due, daemon=True)
        worker.start()
        worker.join(10)
        assert not worker.is_alive()
        assert len(passes) <= 3 and sender.calls == 1
        assert all(row["next_attempt"] > pass_now for row in d.outbox.rows())


class Accepting:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, subscription: Subscription, event: AlertEvent, now: float) -> None:
        self.sent.append(event.notification_key)

    def close(self) -> None:
        pass


def test_one_undecodable_row_does_not_stop_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sender, observer = Accepting(), Observer()
    engine, first = fire("Macro")
    second = engine.evaluate([snap("IPO", end=1_799_999_001.0)], 1_799_999_001.0)
    with Dispatcher(
        [hook("http://x/")],
        tmp_path / "outbox.db",
        clock=Clock(),
        senders={"webhook": sender},
        observer=observer,
    ) as d:
        d.record([first], engine.to_state())
        d.outbox._db.execute(
            'UPDATE outbox SET event = \'{"fingerprint": "x"}\' WHERE id = 1'
        )  # an older format
        d.record(second, engine.to_state())
        with caplog.at_level(logging.ERROR, logger="alerts"):
            assert d.deliver_due() == 1
        assert sender.sent == [second[0].notification_key]
        broken, delivered = d.outbox.rows()
        assert (broken["status"], delivered["status"]) == ("failed", "delivered")
        assert "cannot decode" in broken["last_error"] and "'rule'" in broken["last_error"]
    assert sorted(observer.outcomes) == [("hook", "webhook", "delivered"), ("hook", "webhook", "failed")]
    assert any(first.notification_key in r.message and "cannot decode" in r.message for r in caplog.records)


def test_a_receiver_that_hangs_does_not_delay_the_other_subscriptions(tmp_path: Path) -> None:
    hanging, answering = Receiver(delay_s=6.0), Receiver()
    hanging.start()
    answering.start()
    subscriptions = [
        hook(hanging.url, name="hangs", timeout_s=4.0),  # first: its row is the older one in the outbox
        hook(answering.url, name="answers"),
    ]
    engine, event = fire()
    try:
        with Dispatcher(subscriptions, tmp_path / "outbox.db") as dispatcher:
            dispatcher.start()
            recorded = time.monotonic()
            dispatcher.record([event], engine.to_state())
            while not answering.requests and time.monotonic() - recorded < 10:
                time.sleep(0.01)
            waited = time.monotonic() - recorded
            assert answering.requests, "the answering receiver got nothing"
            assert len(hanging.requests) == 1  # its attempt was in flight meanwhile
            # One thread for both would send to the answering receiver only after the 4 s timeout.
            assert waited < 2.0
    finally:
        hanging.stop()
        answering.stop()


def test_stop_ends_every_delivery_thread(tmp_path: Path) -> None:
    names = ["a", "b", "c"]
    with Dispatcher([hook("http://127.0.0.1:9/", name=n) for n in names], tmp_path / "outbox.db") as d:
        d.start()
        running = {t.name for t in threading.enumerate()}
        assert {f"finsent-alert-delivery-{n}" for n in names} <= running
        d.stop()
        assert not [t for t in threading.enumerate() if t.name.startswith("finsent-alert-delivery-")]


@pytest.mark.parametrize("background", [False, True], ids=["deliver_due", "start"])
def test_rows_of_a_removed_subscription_are_given_up_and_counted(
    background: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine, event = fire()
    db = tmp_path / "outbox.db"
    kept, removed = hook("http://x/", name="kept"), hook("http://x/", name="removed")
    with Dispatcher([kept, removed], db, clock=Clock(), senders={"webhook": Accepting()}) as d:
        d.record([event], engine.to_state())  # stopped before delivering
    sender, observer = Accepting(), Observer()
    with (
        caplog.at_level(logging.ERROR, logger="alerts"),
        Dispatcher([kept], db, clock=Clock(), senders={"webhook": sender}, observer=observer) as d,
    ):
        if background:
            d.start()
            deadline = time.monotonic() + 10
            while d.pending() and time.monotonic() < deadline:
                time.sleep(0.01)
        else:
            assert d.deliver_due() == 1
        statuses = {row["subscription"]: row["status"] for row in d.outbox.rows()}
    assert statuses == {"kept": "delivered", "removed": "failed"}
    assert sender.sent == [event.notification_key]
    assert ("removed", "unconfigured", "failed") in observer.outcomes
    assert any("no longer configured" in r.message for r in caplog.records)


class Refusing:
    """A receiver that is down; counts attempts."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.calls = 0
        self.delay_s = delay_s

    def send(self, subscription: Subscription, event: AlertEvent, now: float) -> None:
        self.calls += 1
        time.sleep(self.delay_s)
        raise DeliveryError("HTTP 500 from receiver")

    def close(self) -> None:
        pass


def test_a_row_waiting_behind_its_alerts_retried_row_does_not_wake_the_thread(tmp_path: Path) -> None:
    """next_due counted it, though it cannot be sent before the row ahead: a pass every 10 ms."""
    engine, firing = fire()
    resolved = resolve(engine)
    sender = Refusing()
    sub = hook("http://x/", backoff_initial_s=60.0, backoff_max_s=60.0)
    with Dispatcher([sub], tmp_path / "outbox.db", senders={"webhook": sender}) as d:
        d.record([firing, resolved], engine.to_state())
        due = d.outbox.due
        passes: list[float] = []

        def counted_due(subscription: str, now: float, limit: int = 100) -> list[OutboxRow]:
            passes.append(now)
            return due(subscription, now, limit)

        d.outbox.due = counted_due  # type: ignore[method-assign]
        d.start()
        time.sleep(2.0)
        d.stop()
    assert sender.calls == 1
    assert len(passes) < 10  # one pass per poll interval (1 s), not hundreds


def test_stop_starts_no_new_attempt_and_returns_after_the_one_in_flight(tmp_path: Path) -> None:
    engine = AlertEngine([rule()])
    events = [e for i in range(20) for e in engine.evaluate([snap(f"T{i}", end=0.0)], 0.0)]
    sender = Refusing(delay_s=0.5)
    sub = hook("http://x/", max_attempts=1)  # each failure is final: the pass would go on to the next row
    with Dispatcher([sub], tmp_path / "outbox.db", senders={"webhook": sender}) as d:
        d.record(events, engine.to_state())
        d.start()
        time.sleep(0.2)
        started = time.monotonic()
        d.stop(timeout=5)
        assert time.monotonic() - started < 1.0
        calls = sender.calls
        time.sleep(1.0)
        assert sender.calls == calls <= 2


def test_rows_past_max_age_are_given_up_without_a_timeout_each(tmp_path: Path) -> None:
    clock = Clock()
    engine = AlertEngine([rule()])
    events = [e for i in range(15) for e in engine.evaluate([snap(f"T{i}", end=0.0)], 0.0)]
    sender = Refusing()
    sub = hook("http://x/", max_age_s=60.0)
    with Dispatcher([sub], tmp_path / "outbox.db", clock=clock, senders={"webhook": sender}) as d:
        d.record(events, engine.to_state())
        d.deliver_due()
        assert sender.calls == 1  # the others wait for the retry time, as the README says
        clock.now += 61
        d.deliver_due()
        assert sender.calls == 1  # all too old: given up, none sent
        assert d.outbox.counts()["failed"] == 15
