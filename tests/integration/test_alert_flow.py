"""Alerts end to end: real broker, `finsent run` as a process, a real signed-webhook receiver.

The input is stamped in event time: an hour-like history of calm oil news (to warm the topic's
baseline), a surge of negative oil headlines, then calm again, all with `published_at` in the past,
so the monitor's clock runs through twenty minutes of news in the seconds it takes to classify them.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from alerts import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from finsent.broker import EmbeddedBroker, free_port
from finsent.demo.make_surge_stream import SURGE_HEADLINES
from finsent.monitor_stage import CHECKPOINT_FILE
from monitor import RateBaseline, load_checkpoint
from tests.integration.conftest import CALM_HEADLINES, ROOT, SURGE_TOPIC, ServiceProcess, TopicReader
from tests.integration.test_alertmanager_push import alertmanager  # noqa: F401  (fixture: a real Alertmanager)
from tests.integration.test_scale_out import metrics_url, samples

pytestmark = pytest.mark.integration

SECRET = "test-secret-7f3a"
RULE = "oil-negative-surge"
MONITOR_ARGS = [
    "--windows",
    "1m,5m",
    "--bucket-seconds",
    "5",
    "--min-volume",
    "10",
    "--baseline-min-samples",
    "10",
    "--allowed-lateness",
    "10m",
    "--eval-interval",
    "0.5",
    "--checkpoint-interval",
    "1",
]


# ------------------------------------------------------------------ receiver


@dataclass
class Delivery:
    """One POST the receiver accepted."""

    status: str
    fingerprint: str
    topic: str
    key: str
    payload: dict[str, Any]


@dataclass
class WebhookReceiver:
    """A real HTTP server that verifies finsent's signature; started on demand on a fixed port."""

    port: int
    secret: str = SECRET
    deliveries: list[Delivery] = field(default_factory=list)
    bad_signatures: int = 0
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """Where finsent should POST."""
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        """Listen (from now on) and record every correctly signed POST."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                signed = verify_signature(
                    receiver.secret,
                    self.headers.get(TIMESTAMP_HEADER, ""),
                    body,
                    self.headers.get(SIGNATURE_HEADER, ""),
                    tolerance_s=300,
                )
                if not signed:
                    receiver.bad_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                payload = json.loads(body)
                for alert in payload["alerts"]:
                    receiver.deliveries.append(
                        Delivery(
                            alert["status"],
                            alert["fingerprint"],
                            alert["labels"]["news_topic"],
                            self.headers.get(IDEMPOTENCY_HEADER, ""),
                            payload,
                        )
                    )
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def of(self, status: str) -> list[Delivery]:
        """Deliveries with that status."""
        return [d for d in self.deliveries if d.status == status]

    def wait_for(self, status: str, timeout: float, service: ServiceProcess) -> list[Delivery]:
        """Deliveries of status once there is at least one; fail after timeout."""
        deadline = time.monotonic() + timeout
        while not self.of(status):
            if time.monotonic() > deadline:
                pytest.fail(f"no {status} alert within {timeout:.0f}s\n{service.log()[-6000:]}")
            time.sleep(0.2)
        return self.of(status)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A receiver on a free port, not yet listening."""
    hook = WebhookReceiver(free_port())
    yield hook
    hook.stop()


# --------------------------------------------------------------------- input


def stamp(epoch: float) -> str:
    """RFC 3339 UTC."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def oil_news(prefix: str, start: float, seconds: float, every: float, negative_share: float) -> list[bytes]:
    """Oil headlines every `every` seconds of event time from `start`; that share of them negative."""
    messages = []
    count = int(seconds / every)
    negatives = 0
    for index in range(count):
        negative = negatives < round((index + 1) * negative_share)
        negatives += negative
        pool = SURGE_HEADLINES if negative else CALM_HEADLINES
        body = {
            "id": f"{prefix}-{index}",
            "headline": pool[index % len(pool)],
            "body": None,
            "published_at": stamp(start + index * every),
            "source": "test",
            "tickers": None,
        }
        messages.append(json.dumps(body).encode("utf-8"))
    return messages


@dataclass
class Timeline:
    """Warm-up (12 min, 20% negative), surge (3 min, 90%), calm (5 min, 10%), ending now."""

    start: float

    @classmethod
    def ending_now(cls) -> Timeline:
        """A timeline whose last message is stamped about now."""
        return cls(time.time() - 20 * 60)

    def warmup(self) -> list[bytes]:
        """Calm history that warms the baseline."""
        return oil_news("warm", self.start, 12 * 60, 3.0, 0.2)

    def surge(self, part: slice = slice(None)) -> list[bytes]:
        """The negative surge (or a slice of it)."""
        return oil_news("surge", self.start + 12 * 60, 3 * 60, 1.0, 0.9)[part]

    def calm(self) -> list[bytes]:
        """Calm news after the surge."""
        return oil_news("calm", self.start + 15 * 60, 5 * 60, 3.0, 0.1)


def send_keyed(broker: EmbeddedBroker, payloads: list[bytes]) -> None:
    """Produce to news.raw on one partition (keyed), so event time arrives in order."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
    for payload in payloads:
        producer.send("news.raw", key=b"oil", value=payload)
    producer.flush(60)
    producer.close()


def write_files(tmp_path: Path, url: str, extra: str = "") -> tuple[Path, Path]:
    """Rules and subscriptions files for the tests."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"""
rules:
  - name: {RULE}
    window: 1m
    rate_above: 0.6
    surge_above: 3
    require: all
    min_volume: 10
    for: 30s
    severity: critical
""",
        encoding="utf-8",
    )
    subscriptions = tmp_path / "subscriptions.yaml"
    subscriptions.write_text(
        f"""
subscriptions:
  - name: test-hook
    kind: webhook
    url: {url}
    secret: {SECRET}
    timeout: 2s
    backoff_initial: 1s
    backoff_max: 4s
  - name: test-kafka
    kind: kafka
    topic: alerts
{extra}
""",
        encoding="utf-8",
    )
    return rules, subscriptions


def start_with_alerts(
    start_service: Callable[..., ServiceProcess], broker: EmbeddedBroker, rules: Path, subs: Path
) -> ServiceProcess:
    """`finsent run` (all stages) with the test's rules, subscriptions and short monitor settings."""
    return start_service(broker, "--rules", str(rules), "--subscriptions", str(subs), *MONITOR_ARGS)


def drain(topic: TopicReader) -> list[Any]:
    """Everything on the topic now: poll until a poll brings nothing new."""
    while True:
        count = len(topic.records)
        if len(topic.poll()) == count and len(topic.poll()) == count:
            return topic.records


def windows_of(records: list[Any], topic: str) -> list[dict[str, Any]]:
    """The 1m window snapshots of a topic from news.windows records, in order."""
    found: list[dict[str, Any]] = []
    for record in records:
        value = json.loads(record.value)
        if value["topic"] == topic:
            found.extend(w for w in value["windows"] if w["window"] == "1m")
    return found


def checkpointed_baseline_mean(state_dir: Path, topic: str, timeout: float) -> float:
    """The topic's baseline mean in the monitor checkpoint, waiting until one is warmed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = load_checkpoint(state_dir / CHECKPOINT_FILE)
        saved = None if state is None else state["baselines"].get(topic)
        estimate = None if saved is None else RateBaseline.from_state(saved).get()
        if estimate is not None:
            return estimate.mean
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint in {state_dir} held a warmed baseline for {topic} in {timeout}s")


# --------------------------------------------------------------------- tests


def test_surge_fires_once_at_a_real_receiver_then_resolves(
    broker: EmbeddedBroker,
    start_service: Callable[..., ServiceProcess],
    reader: Callable[[EmbeddedBroker, str], TopicReader],
    receiver: WebhookReceiver,
    tmp_path: Path,
) -> None:
    receiver.start()
    rules, subs = write_files(tmp_path, receiver.url)
    service = start_with_alerts(start_service, broker, rules, subs)
    timeline = Timeline.ending_now()
    send_keyed(broker, timeline.warmup() + timeline.surge() + timeline.calm())

    firing = receiver.wait_for("firing", 120, service)
    resolved = receiver.wait_for("resolved", 60, service)
    time.sleep(3)  # anything duplicated would arrive now
    firing, resolved = receiver.of("firing"), receiver.of("resolved")
    assert len(firing) == 1, firing
    assert len(resolved) == 1, resolved
    assert receiver.bad_signatures == 0
    alert = firing[0]
    assert alert.topic == SURGE_TOPIC
    assert alert.payload["alerts"][0]["labels"]["alertname"] == RULE
    evidence = alert.payload["alerts"][0]["evidence"]
    assert evidence["rate"] > 0.6 and evidence["surge"] > 3 and evidence["baseline_mean"] < 0.4
    assert all(h["id"].startswith("surge-") for h in evidence["headlines"])
    assert resolved[0].fingerprint == alert.fingerprint
    assert resolved[0].key != alert.key
    # The Kafka subscription saw the same two notifications.
    alerts_topic = reader(broker, "alerts")
    alerts_topic.until(lambda records: len(records) >= 2, timeout=30, what="firing + resolved")
    assert [json.loads(r.value)["status"] for r in alerts_topic.records] == ["firing", "resolved"]
    # The monitor's gauges and the alert counters are on the one /metrics endpoint of the process.
    base = metrics_url(service)
    rates = samples(base, "finsent_negative_rate")
    assert (("news_topic", SURGE_TOPIC), ("window", "1m")) in rates
    assert samples(base, "finsent_alert_transitions_total") == {
        (("rule", RULE), ("status", "firing")): 1.0,
        (("rule", RULE), ("status", "resolved")): 1.0,
    }
    assert service.alive(), service.log()


def test_receiver_down_30s_then_up_gets_the_alert_once(
    broker: EmbeddedBroker,
    start_service: Callable[..., ServiceProcess],
    reader: Callable[[EmbeddedBroker, str], TopicReader],
    receiver: WebhookReceiver,
    tmp_path: Path,
) -> None:
    rules, subs = write_files(tmp_path, receiver.url)
    service = start_with_alerts(start_service, broker, rules, subs)
    timeline = Timeline.ending_now()
    send_keyed(broker, timeline.warmup() + timeline.surge() + timeline.calm())
    alerts_topic = reader(broker, "alerts")
    alerts_topic.until(lambda records: len(records) >= 1, timeout=120, what="the firing alert")
    time.sleep(30)  # the receiver is down: connection refused, retried with backoff
    receiver.start()
    receiver.wait_for("resolved", 30, service)
    time.sleep(5)
    assert len(receiver.of("firing")) == 1, receiver.deliveries
    assert len(receiver.of("resolved")) == 1, receiver.deliveries
    assert [d.status for d in receiver.deliveries] == ["firing", "resolved"]
    assert receiver.bad_signatures == 0
    assert "test-hook" in service.log() and "retrying" in service.log()


def test_kill_9_during_surge_no_second_firing_and_baselines_survive(
    broker: EmbeddedBroker,
    start_service: Callable[..., ServiceProcess],
    reader: Callable[[EmbeddedBroker, str], TopicReader],
    receiver: WebhookReceiver,
    tmp_path: Path,
) -> None:
    receiver.start()
    rules, subs = write_files(tmp_path, receiver.url)
    first = start_with_alerts(start_service, broker, rules, subs)
    timeline = Timeline.ending_now()
    send_keyed(broker, timeline.warmup() + timeline.surge(slice(0, 100)))
    receiver.wait_for("firing", 120, first)
    windows = reader(broker, "news.windows")
    before = windows_of(drain(windows), SURGE_TOPIC)
    assert before[-1]["baseline_mean"] is not None and before[-1]["surge"] > 3
    # What survives a kill -9 is the last checkpoint (state learnt after it is replayed from the
    # uncommitted offsets), so kill only once a checkpoint holds the warmed baseline.
    baseline_before = checkpointed_baseline_mean(tmp_path / "state", SURGE_TOPIC, 30)
    first.signal(signal.SIGKILL)
    first.wait(10)
    time.sleep(1)
    seen_before_kill = len(drain(windows))  # everything the killed process produced

    second = start_with_alerts(start_service, broker, rules, subs)
    send_keyed(broker, timeline.surge(slice(100, None)) + timeline.calm())
    receiver.wait_for("resolved", 120, second)
    time.sleep(3)
    after = windows_of(drain(windows)[seen_before_kill:], SURGE_TOPIC)
    assert after, "the restarted monitor produced no windows"
    # Restored, not relearnt: the first snapshot after the restart already has the learnt baseline.
    assert after[0]["baseline_mean"] == pytest.approx(baseline_before, abs=0.05)
    assert after[0]["volume"] > 0
    firing_keys = {d.key for d in receiver.of("firing")}
    assert len(firing_keys) == 1, receiver.deliveries
    assert len({d.key for d in receiver.of("resolved")}) == 1
    print(
        f"kill -9 during surge: {len(receiver.of('firing'))} firing POST(s), 1 alert; "
        f"baseline {baseline_before:.3f} before, {after[0]['baseline_mean']:.3f} after restart"
    )
    assert second.alive(), second.log()


def test_demo_delivers_the_surge_alert_to_a_webhook_within_a_minute(
    broker: EmbeddedBroker, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    del broker  # only for its skip-without-model check: the demo starts its own broker
    receiver.start()
    command = [sys.executable, "-m", "finsent", "demo", "--duration", "60", "--refresh", "10"]
    command += ["--webhook-url", receiver.url, "--webhook-secret", SECRET]
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    firing = receiver.of("firing")
    assert firing, f"no alert delivered\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert {d.topic for d in firing} == {SURGE_TOPIC}
    assert receiver.bad_signatures == 0
    assert "1 firing" in done.stdout or "1 resolved" in done.stdout
    print(f"demo: firing delivered; demo ran {time.monotonic() - started:.0f}s")


def am_alerts(url: str) -> list[dict[str, Any]]:
    """Active alerts Alertmanager's API v2 lists for the test rule."""
    with urllib.request.urlopen(
        f"{url}/api/v2/alerts?filter=alertname%3D%22{RULE}%22", timeout=5
    ) as response:
        found: list[dict[str, Any]] = json.loads(response.read())
        return found


def test_alertmanager_shows_the_alert_through_finsent_run(
    broker: EmbeddedBroker,
    start_service: Callable[..., ServiceProcess],
    receiver: WebhookReceiver,
    alertmanager: str,  # noqa: F811  (the imported fixture)
    tmp_path: Path,
) -> None:
    receiver.start()
    extra = f"  - name: test-am\n    kind: alertmanager\n    url: {alertmanager}\n"
    rules, subs = write_files(tmp_path, receiver.url, extra)
    service = start_with_alerts(start_service, broker, rules, subs)
    timeline = Timeline.ending_now()
    send_keyed(broker, timeline.warmup() + timeline.surge())  # no calm yet: the alert stays firing

    receiver.wait_for("firing", 120, service)
    deadline = time.monotonic() + 30
    while not (shown := am_alerts(alertmanager)):
        if time.monotonic() > deadline:
            pytest.fail(f"Alertmanager shows no {RULE} alert\n{service.log()[-4000:]}")
        time.sleep(0.5)
    (alert,) = shown
    assert alert["labels"]["news_topic"] == SURGE_TOPIC
    assert alert["labels"]["severity"] == "critical"
    assert alert["status"]["state"] == "active"
    assert "negative" in alert["annotations"]["summary"]

    send_keyed(broker, timeline.calm())
    receiver.wait_for("resolved", 120, service)
    deadline = time.monotonic() + 30
    while am_alerts(alertmanager):  # the resolved push ends it: no longer active
        if time.monotonic() > deadline:
            pytest.fail(f"Alertmanager still shows the alert after it resolved: {am_alerts(alertmanager)}")
        time.sleep(0.5)
