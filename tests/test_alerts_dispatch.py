"""The delivery pass under a wall clock that steps back, and with an outbox row that no longer decodes."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from alerts import AlertEvent, DeliveryError, Dispatcher, Subscription
from alerts.outbox import OutboxRow
from tests.test_alerts_delivery import Clock, Observer, fire, hook
from tests.test_alerts_engine import snap


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

        def counted_due(now: float, limit: int = 100) -> list[OutboxRow]:
            passes.append(now)
            if len(passes) > 50:  # the bug: the same pass finds the same rows due forever
                raise RuntimeError("the delivery pass does not end")
            return due(now, limit)

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
