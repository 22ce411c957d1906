"""Push alerts to a real Alertmanager (the Debian package) through the Dispatcher and read them back."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from alerts import AlertEngine, Dispatcher, Rule, Subscription
from monitor import Headline, WindowSnapshot
from tests.integration.debian import require_binary

pytestmark = pytest.mark.integration

CONFIG = """\
route:
  receiver: "null"
  group_wait: 1s
receivers:
  - name: "null"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    """A real Alertmanager on a free loopback port with a null receiver; its base URL."""
    binary = require_binary("prometheus-alertmanager")
    config = tmp_path / "alertmanager.yml"
    config.write_text(CONFIG, encoding="utf-8")
    port = free_port()
    log_path = tmp_path / "alertmanager.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.path={tmp_path / 'data'}",
                "--cluster.listen-address=",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"alertmanager did not become ready:\n{log_path.read_text(errors='replace')[-2000:]}"
                )
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def snapshot(rate: float, end: float) -> WindowSnapshot:
    return WindowSnapshot(
        topic="Fed | Central Banks",
        window="5m",
        window_seconds=300,
        end=end,
        volume=80,
        negative=round(rate * 80),
        rate=rate,
        expected_rate=rate,
        baseline_mean=0.2,
        baseline_std=0.04,
        surge=6.5 if rate > 0.5 else 0.0,
        headlines=(Headline(0.98, "news-42", "Central bank stuns markets with emergency hike", end - 5),),
    )


def finsent_alerts(url: str) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = get_json(f"{url}/api/v2/alerts")
    return [a for a in alerts if a["labels"].get("alertname") == "fed-surge"]


def test_firing_and_resolved_alerts_reach_alertmanager(alertmanager: str, tmp_path: Path) -> None:
    rule = Rule(
        name="fed-surge", surge_above=4.0, min_volume=20, severity="critical", labels={"team": "rates"}
    )
    engine = AlertEngine([rule])
    subscription = Subscription("am", "alertmanager", url=alertmanager)
    start = time.time()
    with Dispatcher([subscription], tmp_path / "outbox.db") as dispatcher:
        firing = engine.evaluate([snapshot(0.7, start)], start)
        assert [e.status for e in firing] == ["firing"]
        dispatcher.record(firing, engine.to_state())
        assert dispatcher.deliver_due() == 1

        (alert,) = finsent_alerts(alertmanager)
        assert alert["labels"] == {
            "alertname": "fed-surge",
            "news_topic": "Fed | Central Banks",
            "severity": "critical",
            "team": "rates",
        }
        assert alert["status"]["state"] == "active"
        assert "[news-42] Central bank stuns markets" in alert["annotations"]["headlines"]
        assert alert["annotations"]["rate"] == "70.0%"
        # finsent re-pushes every repeat interval (1h); without that Alertmanager expires it after 3x.
        ends_at = datetime.fromisoformat(alert["endsAt"].replace("Z", "+00:00")).timestamp()
        assert ends_at == pytest.approx(time.time() + 3 * 3600, abs=120)

        resolved = engine.evaluate([snapshot(0.1, start + 1)], start + 1)
        assert [e.status for e in resolved] == ["resolved"]
        dispatcher.record(resolved, engine.to_state())
        assert dispatcher.deliver_due() == 1

        remaining = finsent_alerts(alertmanager)
        assert remaining == []  # Alertmanager lists active alerts only; a resolved one drops out
        assert dispatcher.outbox.counts() == {"pending": 0, "delivered": 2, "failed": 0}
