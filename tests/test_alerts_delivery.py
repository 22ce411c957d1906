"""Deliveries: signed webhooks against a real local HTTP receiver, retries, give-ups, the durable outbox."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from alerts import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AlertEngine,
    AlertEvent,
    AlertMetrics,
    DeliveryError,
    Dispatcher,
    Subscription,
    alertmanager_alert,
    backoff_delay,
    jittered,
    kafka_record,
    sign,
    verify_signature,
    webhook_payload,
)
from alerts.delivery import retry_after_seconds
from tests.test_alerts_engine import rule, snap

SECRET = "test-secret"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A real HTTP server on a loopback port; answers with the queued statuses (then 200)."""

    statuses: list[int] = field(default_factory=list)
    delay_s: float = 0.0
    retry_after: str | None = None
    """Sent as Retry-After with every status other than 200."""
    requests: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    port: int = 0

    def start(self, port: int = 0) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(Received(dict(self.headers.items()), body))
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                try:
                    self.send_response(status)
                    if status != 200 and receiver.retry_after is not None:
                        self.send_header("Retry-After", receiver.retry_after)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and hung up: exactly what the timeout test wants

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    running.start()
    yield running
    running.stop()


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Observer:
    def __init__(self) -> None:
        self.outcomes: list[tuple[str, str, str]] = []
        self.pending: list[int] = []

    def notification(self, subscription: str, kind: str, outcome: str) -> None:
        self.outcomes.append((subscription, kind, outcome))

    def outbox_pending(self, count: int) -> None:
        self.pending.append(count)


def hook(url: str, **overrides: Any) -> Subscription:
    settings: dict[str, Any] = {
        "name": "hook",
        "kind": "webhook",
        "url": url,
        "secret": SECRET,
        "timeout_s": 2.0,
    }
    settings.update(overrides)
    return Subscription(**settings)


def fire(topic: str = "Macro", severity: str = "warning") -> tuple[AlertEngine, AlertEvent]:
    engine = AlertEngine([rule(severity=severity)])
    (event,) = engine.evaluate([snap(topic, end=1_799_999_000.0)], 1_799_999_000.0)
    return engine, event


def resolve(engine: AlertEngine, topic: str = "Macro") -> AlertEvent:
    (event,) = engine.evaluate([snap(topic, rate=0.1, end=1_799_999_600.0)], 1_799_999_600.0)
    return event


# --- webhook payload and signature ------------------------------------------------------------------


def test_webhook_payload_has_the_alertmanager_v4_shape() -> None:
    engine, event = fire()
    payload = webhook_payload(event, "risk-desk")
    assert payload["version"] == "4" and payload["receiver"] == "risk-desk" and payload["status"] == "firing"
    assert payload["truncatedAlerts"] == 0
    assert payload["groupLabels"] == {"alertname": "neg", "news_topic": "Macro"}
    assert payload["commonLabels"] == event.labels and payload["commonAnnotations"] == event.annotations
    assert payload["groupKey"] == '{}:{alertname="neg", news_topic="Macro"}'
    (alert,) = payload["alerts"]
    assert alert["startsAt"] == "2027-01-15T07:43:20.000Z"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert alert["fingerprint"] == event.fingerprint
    assert alert["evidence"]["headlines"][0]["id"] == "m-1"
    assert alert["evidence"]["rate"] == 0.6 and alert["evidence"]["volume"] == 50
    (resolved_alert,) = webhook_payload(resolve(engine), "risk-desk")["alerts"]
    assert (resolved_alert["status"], resolved_alert["endsAt"]) == ("resolved", "2027-01-15T07:53:20.000Z")


def test_signature_verifies_and_rejects_tampering() -> None:
    body = b'{"version":"4"}'
    header = sign(SECRET, "1800000000", body)
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert verify_signature(SECRET, "1800000000", body, header)
    assert not verify_signature(SECRET, "1800000000", body + b" ", header)
    assert not verify_signature(SECRET, "1800000001", body, header)
    assert not verify_signature("other", "1800000000", body, header)
    assert not verify_signature(SECRET, "1800000000", body, "sha256=" + "0" * 64)
    assert verify_signature(SECRET, "1800000000", body, header, tolerance_s=300, now=1_800_000_100)
    assert not verify_signature(SECRET, "1800000000", body, header, tolerance_s=300, now=1_800_000_400)


@given(st.binary(max_size=200), st.text(min_size=1, max_size=20), st.integers(0, 2**40))
def test_signatures_round_trip(body: bytes, secret: str, timestamp: int) -> None:
    header = sign(secret, str(timestamp), body)
    assert verify_signature(secret, str(timestamp), body, header)
    assert not verify_signature(secret + "x", str(timestamp), body, header)


# --- delivery through the dispatcher ----------------------------------------------------------------


def test_webhook_is_posted_signed_with_idempotency_key(receiver: Receiver, tmp_path: Path) -> None:
    clock = Clock()
    engine, event = fire()
    with Dispatcher([hook(receiver.url)], tmp_path / "outbox.db", clock=clock) as dispatcher:
        dispatcher.record([event], engine.to_state())
        assert dispatcher.pending() == 1
        assert dispatcher.deliver_due() == 1
        assert dispatcher.pending() == 0
    (request,) = receiver.requests
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers[IDEMPOTENCY_HEADER] == event.notification_key
    assert request.headers[TIMESTAMP_HEADER] == "1800000000"
    assert verify_signature(
        SECRET, request.headers[TIMESTAMP_HEADER], request.body, request.headers[SIGNATURE_HEADER]
    )
    payload = json.loads(request.body)
    assert payload["alerts"][0]["labels"]["news_topic"] == "Macro"


def test_retries_with_backoff_until_delivered(receiver: Receiver, tmp_path: Path) -> None:
    receiver.statuses = [503, 500, 429]
    clock, observer = Clock(), Observer()
    sub = hook(receiver.url, backoff_initial_s=10.0, backoff_max_s=25.0)
    engine, event = fire()
    with Dispatcher([sub], tmp_path / "outbox.db", clock=clock, observer=observer) as dispatcher:
        dispatcher.record([event], engine.to_state())
        delays = []
        for _ in range(3):
            assert dispatcher.deliver_due() == 0
            (row,) = dispatcher.outbox.rows()
            delays.append(row["next_attempt"] - clock.now)
            assert dispatcher.deliver_due() == 0  # not due yet: no request
            clock.now = row["next_attempt"]
        assert dispatcher.deliver_due() == 1
    assert 5.0 <= delays[0] <= 10.0 and 10.0 <= delays[1] <= 20.0 and 12.5 <= delays[2] <= 25.0
    assert len(receiver.requests) == 4
    assert len({r.headers[IDEMPOTENCY_HEADER] for r in receiver.requests}) == 1
    assert [o[2] for o in observer.outcomes] == ["retry", "retry", "retry", "delivered"]
    assert observer.pending[-1] == 0


@pytest.mark.parametrize(
    ("status", "retry_after", "low", "high"),
    [
        (429, "120", 120.0, 120.0),  # the receiver's wait, past the 5-10 s backoff
        (429, "3", 5.0, 10.0),  # shorter than the backoff: the backoff stands
        (429, "86400", 600.0, 600.0),  # at most backoff_max
        (429, "Sun, 06 Jan 2019 08:49:37 GMT", 5.0, 10.0),  # a date in the past: the backoff
        (429, "soon", 5.0, 10.0),  # unreadable: ignored
        # A passing redirect is a failed attempt too, and its Retry-After counts as well.
        (302, "120", 120.0, 120.0),
        (303, "120", 120.0, 120.0),
        (307, "120", 120.0, 120.0),
    ],
)
def test_a_receivers_retry_after_is_honoured_up_to_backoff_max(
    receiver: Receiver, tmp_path: Path, status: int, retry_after: str, low: float, high: float
) -> None:
    receiver.statuses, receiver.retry_after = [status], retry_after
    clock = Clock(time.time())  # an HTTP date is read against the wall clock
    sub = hook(receiver.url, backoff_initial_s=10.0, backoff_max_s=600.0)
    engine, event = fire()
    with Dispatcher([sub], tmp_path / "outbox.db", clock=clock) as dispatcher:
        dispatcher.record([event], engine.to_state())
        assert dispatcher.deliver_due() == 0
        (row,) = dispatcher.outbox.rows()
    assert row["status"] == "pending"
    assert low - 1 <= row["next_attempt"] - clock.now <= high + 1


def test_retry_after_as_an_http_date() -> None:
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", 1445412450.0) == pytest.approx(30.0)
    assert retry_after_seconds(" 42 ", 0.0) == 42.0
    assert retry_after_seconds("-5", 0.0) is None and retry_after_seconds(None, 0.0) is None


def test_client_errors_are_permanent_and_logged(
    receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.statuses = [400]
    observer = Observer()
    engine, event = fire()
    with Dispatcher(
        [hook(receiver.url)], tmp_path / "outbox.db", clock=Clock(), observer=observer
    ) as dispatcher:
        dispatcher.record([event], engine.to_state())
        with caplog.at_level(logging.ERROR, logger="alerts.dispatch"):
            assert dispatcher.deliver_due() == 0
        assert dispatcher.pending() == 0
        assert dispatcher.outbox.counts()["failed"] == 1
    assert observer.outcomes == [("hook", "webhook", "failed")]
    assert any("permanent failure" in r.message and "HTTP 400" in r.message for r in caplog.records)


def test_timeouts_are_retried(receiver: Receiver, tmp_path: Path) -> None:
    receiver.delay_s = 1.0
    engine, event = fire()
    with Dispatcher([hook(receiver.url, timeout_s=0.2)], tmp_path / "outbox.db", clock=Clock()) as dispatcher:
        dispatcher.record([event], engine.to_state())
        started = time.monotonic()
        assert dispatcher.deliver_due() == 0
        assert time.monotonic() - started < 0.9
        (row,) = dispatcher.outbox.rows()
        assert (row["status"], row["attempts"]) == ("pending", 1)
        assert "timed out" in row["last_error"]


def test_gives_up_after_max_attempts(tmp_path: Path) -> None:
    clock = Clock()
    engine, event = fire()
    sub = hook("http://127.0.0.1:9/closed", max_attempts=2)
    with Dispatcher([sub], tmp_path / "outbox.db", clock=clock) as dispatcher:
        dispatcher.record([event], engine.to_state())
        dispatcher.deliver_due()
        clock.now += 10
        dispatcher.deliver_due()
        (row,) = dispatcher.outbox.rows()
        assert (row["status"], row["attempts"]) == ("failed", 2)


def test_gives_up_after_max_age(tmp_path: Path) -> None:
    clock = Clock()
    engine, event = fire()
    sub = hook("http://127.0.0.1:9/closed", max_age_s=60.0)
    with Dispatcher([sub], tmp_path / "outbox.db", clock=clock) as dispatcher:
        dispatcher.record([event], engine.to_state())
        dispatcher.deliver_due()
        assert dispatcher.pending() == 1
        clock.now += 61
        dispatcher.deliver_due()
        assert dispatcher.outbox.counts() == {"pending": 0, "delivered": 0, "failed": 1}


@pytest.mark.parametrize(
    "sub",
    [
        hook("http://127.0.0.1:abc/h"),  # http.client.InvalidURL, a ValueError
        hook("http://127.0.0.1:99999/h"),
        hook("http://exa mple.com/h"),
        hook("http://caf\u00e9.example/h\u00e9"),
        hook("http://127.0.0.1:9/h", secret="\ud800"),  # cannot be encoded to sign
        Subscription("am", "alertmanager", url="http://am:abc"),
        Subscription("am", "alertmanager", url="http://127.0.0.1:9", ttl_s=1e300),  # endsAt past year 9999
    ],
    ids=["bad-port", "port-overflow", "space", "non-ascii", "surrogate-secret", "am-bad-port", "am-huge-ttl"],
)
def test_what_no_retry_can_fix_fails_permanently_without_a_traceback(
    sub: Subscription, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    observer = Observer()
    engine, event = fire()
    with Dispatcher([sub], tmp_path / "outbox.db", clock=Clock(), observer=observer) as dispatcher:
        dispatcher.record([event], engine.to_state())
        with caplog.at_level(logging.WARNING, logger="alerts.dispatch"):
            assert dispatcher.deliver_due() == 0
        (row,) = dispatcher.outbox.rows()
        assert (row["status"], row["attempts"]) == ("failed", 1)
    assert observer.outcomes == [(sub.name, sub.kind, "failed")]
    assert [r.exc_info for r in caplog.records] == [None]
    assert "permanent failure" in caplog.records[0].message


def test_survives_receiver_downtime_and_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    down = Receiver()
    down.start()
    port = down.port
    down.stop()  # the receiver is down: connection refused
    engine, event = fire()
    db = tmp_path / "outbox.db"
    first = Dispatcher([hook(f"http://127.0.0.1:{port}/hook")], db, clock=clock)
    first.record([event], engine.to_state())
    assert first.deliver_due() == 0
    first.close()  # finsent stops with the notification undelivered

    up = Receiver()
    up.start(port)
    try:
        clock.now += 3600
        second = Dispatcher([hook(up.url)], db, clock=clock)
        assert second.pending() == 1
        state = second.load_engine_state()
        assert state == engine.to_state()
        restored = AlertEngine(engine.rules, state=state)
        assert restored.evaluate([snap("Macro", end=1_799_999_060.0)], 1_799_999_060.0) == []  # no re-fire
        assert second.deliver_due() == 1
        second.close()
    finally:
        up.stop()
    (request,) = up.requests
    assert request.headers[IDEMPOTENCY_HEADER] == event.notification_key


def test_reemitted_notifications_are_recorded_once(tmp_path: Path) -> None:
    engine, event = fire()
    subs = [hook("http://127.0.0.1:9/a"), hook("http://127.0.0.1:9/b", name="other")]
    with Dispatcher(subs, tmp_path / "outbox.db", clock=Clock()) as dispatcher:
        dispatcher.record([event], engine.to_state())
        dispatcher.record([event], engine.to_state())  # e.g. replayed after a crash
        assert sorted(r["subscription"] for r in dispatcher.outbox.rows()) == ["hook", "other"]


def test_only_matching_subscriptions_get_rows(tmp_path: Path) -> None:
    engine, event = fire("Macro", severity="info")
    subs = [
        hook("http://127.0.0.1:9/a", name="macro", topics=("Macro",)),
        hook("http://127.0.0.1:9/b", name="energy", topics=("Energy | Oil",)),
        hook("http://127.0.0.1:9/c", name="critical-only", min_severity="critical"),
    ]
    with Dispatcher(subs, tmp_path / "outbox.db", clock=Clock()) as dispatcher:
        dispatcher.record([event], engine.to_state())
        assert [r["subscription"] for r in dispatcher.outbox.rows()] == ["macro"]


def test_record_is_one_transaction(tmp_path: Path) -> None:
    _, event = fire()
    with Dispatcher([hook("http://127.0.0.1:9/a")], tmp_path / "outbox.db", clock=Clock()) as dispatcher:
        with pytest.raises(TypeError):
            dispatcher.record([event], {"not json": object()})
        assert dispatcher.outbox.rows() == [] and dispatcher.load_engine_state() is None


def test_resolved_never_overtakes_its_firing(receiver: Receiver, tmp_path: Path) -> None:
    receiver.statuses = [503]
    clock = Clock()
    engine, firing = fire()
    resolved = resolve(engine)
    with Dispatcher([hook(receiver.url)], tmp_path / "outbox.db", clock=clock) as dispatcher:
        dispatcher.record([firing], engine.to_state())
        dispatcher.record([resolved], engine.to_state())
        assert dispatcher.deliver_due() == 0  # firing failed; resolved must wait behind it
        assert len(receiver.requests) == 1
        clock.now += 10
        assert dispatcher.deliver_due() == 2
    assert [json.loads(r.body)["status"] for r in receiver.requests] == ["firing", "firing", "resolved"]


def test_a_down_subscription_costs_one_attempt_per_pass(receiver: Receiver, tmp_path: Path) -> None:
    receiver.statuses = [503]
    clock = Clock()
    events, state = [], {}
    for topic in ("Macro", "Markets", "IPO"):
        engine, event = fire(topic)
        events.append(event)
        state = engine.to_state()
    with Dispatcher([hook(receiver.url)], tmp_path / "outbox.db", clock=clock) as dispatcher:
        dispatcher.record(events, state)
        assert dispatcher.deliver_due() == 0
        assert len(receiver.requests) == 1
        assert [r["attempts"] for r in dispatcher.outbox.rows()] == [1, 0, 0]
        clock.now += 10
        assert dispatcher.deliver_due() == 3


def test_background_thread_delivers(receiver: Receiver, tmp_path: Path) -> None:
    engine, event = fire()
    dispatcher = Dispatcher([hook(receiver.url)], tmp_path / "outbox.db", poll_interval_s=0.05)
    dispatcher.start()
    try:
        dispatcher.record([event], engine.to_state())
        deadline = time.monotonic() + 5
        while dispatcher.pending() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert dispatcher.pending() == 0
    finally:
        dispatcher.close()
    assert len(receiver.requests) == 1


def test_kafka_subscription_needs_a_bootstrap(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="subscription 'k': kind 'kafka' needs kafka_bootstrap"):
        Dispatcher([Subscription("k", "kafka")], tmp_path / "outbox.db")


# --- sink payloads ---------------------------------------------------------------------------------


def test_alertmanager_alert_expiry() -> None:
    engine, firing = fire()
    sub = Subscription("am", "alertmanager", url="http://127.0.0.1:9093")
    now = 1_800_000_000.0
    alert = alertmanager_alert(sub, firing, now)
    assert set(alert) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
    assert alert["endsAt"] == "2027-01-15T11:00:00.000Z"  # now + 3 x 1h repeat interval
    short = Subscription("am", "alertmanager", url="http://x:9093", ttl_s=600)
    assert alertmanager_alert(short, firing, now)["endsAt"] == "2027-01-15T08:10:00.000Z"
    resolved = resolve(engine)
    assert alertmanager_alert(sub, resolved, now)["endsAt"] == "2027-01-15T07:53:20.000Z"
    # a resolve time ahead of the wall clock would keep the alert active in Alertmanager
    assert alertmanager_alert(sub, resolved, now - 3600)["endsAt"] == "2027-01-15T07:00:00.000Z"
    # and an end before the start is rejected by Alertmanager: both are clamped to the wall clock
    early = alertmanager_alert(sub, resolved, now - 7200)
    assert early["startsAt"] == early["endsAt"] == "2027-01-15T06:00:00.000Z"


def test_kafka_record_is_keyed_by_fingerprint() -> None:
    _, event = fire()
    key, value, headers = kafka_record(event)
    assert key == event.fingerprint.encode()
    assert AlertEvent.from_dict(json.loads(value)) == event
    assert headers == [(IDEMPOTENCY_HEADER, event.notification_key.encode())]


# --- backoff ---------------------------------------------------------------------------------------


@given(
    st.integers(1, 200),
    st.floats(0.01, 100.0),
    st.floats(0.01, 10_000.0),
    st.floats(0.0, 1.0),
)
def test_backoff_is_monotone_and_bounded(attempt: int, initial: float, maximum: float, u: float) -> None:
    maximum = max(maximum, initial)
    delay = backoff_delay(attempt, initial, maximum)
    assert initial <= delay <= maximum
    assert backoff_delay(attempt + 1, initial, maximum) >= delay
    if attempt > 1 and delay < maximum:
        assert delay == pytest.approx(2 * backoff_delay(attempt - 1, initial, maximum))

    class Fixed:
        def random(self) -> float:
            return u

    assert delay / 2 <= jittered(delay, Fixed()) <= delay  # type: ignore[arg-type]


# --- metrics ---------------------------------------------------------------------------------------


def test_metrics_names_and_stale_series() -> None:
    registry = CollectorRegistry()
    metrics = AlertMetrics(registry)
    engine = AlertEngine([rule(repeat_interval=60)])
    events = engine.evaluate([snap("Macro", end=0), snap("IPO", end=0)], 0)
    events += engine.evaluate([snap("Macro", end=100), snap("IPO", rate=0.1, end=100)], 100)
    metrics.transitions(events)
    metrics.update(engine.active())
    value = registry.get_sample_value
    assert (
        value(
            "finsent_alerts_active",
            {"rule": "neg", "news_topic": "Macro", "severity": "warning", "state": "firing"},
        )
        == 1
    )
    assert (
        value(
            "finsent_alerts_active",
            {"rule": "neg", "news_topic": "IPO", "severity": "warning", "state": "firing"},
        )
        is None
    )
    assert (
        value("finsent_alert_transitions_total", {"rule": "neg", "status": "firing"}) == 2
    )  # the repeat is not counted
    assert value("finsent_alert_transitions_total", {"rule": "neg", "status": "resolved"}) == 1
    metrics.notification("hook", "webhook", "retry")
    metrics.outbox_pending(3)
    assert (
        value(
            "finsent_alert_notifications_total",
            {"subscription": "hook", "kind": "webhook", "outcome": "retry"},
        )
        == 1
    )
    assert value("finsent_alert_outbox_pending") == 3
    metrics.update([])
    assert (
        value(
            "finsent_alerts_active",
            {"rule": "neg", "news_topic": "Macro", "severity": "warning", "state": "firing"},
        )
        is None
    )


class FlakySender:
    """A sender that fails according to a script of outcomes (True = accept, False = retryable error)."""

    def __init__(self, script: list[bool]) -> None:
        self.script = list(script)
        self.accepted: list[str] = []
        self.attempts: dict[str, int] = {}

    def send(self, subscription: Subscription, event: AlertEvent, now: float) -> None:
        self.attempts[event.notification_key] = self.attempts.get(event.notification_key, 0) + 1
        if self.script and not self.script.pop(0):
            raise DeliveryError("receiver unavailable")
        self.accepted.append(event.notification_key)

    def close(self) -> None:
        pass


@settings(max_examples=40, deadline=None)
@given(script=st.lists(st.booleans(), max_size=30), max_attempts=st.integers(0, 4), topics=st.integers(1, 3))
def test_delivery_invariants_under_flaky_receivers(
    tmp_path_factory: pytest.TempPathFactory, script: list[bool], max_attempts: int, topics: int
) -> None:
    clock = Clock()
    sender = FlakySender(script)
    sub = Subscription(
        "s", "webhook", url="http://x/", secret="k", max_attempts=max_attempts, backoff_max_s=8.0
    )
    recorded: list[AlertEvent] = []
    db = tmp_path_factory.mktemp("outbox") / "outbox.db"
    with Dispatcher([sub], db, clock=clock, senders={"webhook": sender}) as dispatcher:
        engine = AlertEngine([rule()])
        names = ["Macro", "IPO", "Markets"][:topics]
        for step, rate in enumerate([0.6, 0.1, 0.6]):
            events = engine.evaluate([snap(t, rate=rate, end=float(step)) for t in names], float(step))
            dispatcher.record(events, engine.to_state())
            recorded += events
        for _ in range(40):
            dispatcher.deliver_due()
            if not dispatcher.pending():
                break
            clock.now += 10
        counts = dispatcher.outbox.counts()
    assert counts["pending"] == 0 and counts["delivered"] + counts["failed"] == len(recorded)
    assert len(sender.accepted) == len(set(sender.accepted)) == counts["delivered"]
    if max_attempts:
        assert max(sender.attempts.values()) <= max_attempts
    else:
        assert counts["failed"] == 0
    order = {e.notification_key: i for i, e in enumerate(recorded)}
    for fp in {e.fingerprint for e in recorded}:
        mine = [order[k] for k in sender.accepted if k.startswith(fp)]
        assert mine == sorted(mine)  # one alert's notifications arrive in the order they happened


def test_metrics_series_of_known_rules_and_subscriptions_exist_at_zero() -> None:
    """Without the 0 sample, rate()/increase() over the first notifications reads 0 (no earlier point)."""
    registry = CollectorRegistry()
    AlertMetrics(registry).declare([rule()], [hook("http://127.0.0.1:9/x")])
    value = registry.get_sample_value
    for status in ("firing", "resolved"):
        assert value("finsent_alert_transitions_total", {"rule": "neg", "status": status}) == 0
    for outcome in ("delivered", "retry", "failed"):
        labels = {"subscription": "hook", "kind": "webhook", "outcome": outcome}
        assert value("finsent_alert_notifications_total", labels) == 0
