"""The service's HTTP endpoints: /metrics as Prometheus expects it, /healthz, /readyz."""

from __future__ import annotations

import gzip
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from finsent.metrics import MetricsServer


@pytest.fixture
def server() -> Iterator[tuple[MetricsServer, dict[str, bool]]]:
    registry = CollectorRegistry()
    Counter("finsent_demo_messages", "messages", registry=registry).inc(3)
    state = {"healthy": True, "ready": False}
    served = MetricsServer(registry, "127.0.0.1", 0, lambda: state["healthy"], lambda: state["ready"])
    served.start()
    yield served, state
    served.stop()


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes, str]:
    """Status, content type, body and content encoding of one GET."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return (
                response.status,
                response.headers["Content-Type"],
                response.read(),
                response.headers.get("Content-Encoding", ""),
            )
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read(), ""


def test_metrics_in_the_prometheus_text_format(server: tuple[MetricsServer, dict[str, bool]]) -> None:
    status, content_type, body, _ = get(server[0].port, "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    assert "finsent_demo_messages_total 3.0" in body.decode()


def test_metrics_in_openmetrics_when_the_scraper_asks(server: tuple[MetricsServer, dict[str, bool]]) -> None:
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    status, content_type, body, _ = get(server[0].port, "/metrics", {"Accept": accept})
    assert status == 200 and content_type.startswith("application/openmetrics-text")
    assert body.decode().endswith("# EOF\n")


def test_metrics_gzipped_when_accepted(server: tuple[MetricsServer, dict[str, bool]]) -> None:
    status, _, body, encoding = get(server[0].port, "/metrics", {"Accept-Encoding": "gzip"})
    assert status == 200 and encoding == "gzip"
    assert b"finsent_demo_messages_total 3.0" in gzip.decompress(body)


def test_health_and_readiness_follow_the_callables(server: tuple[MetricsServer, dict[str, bool]]) -> None:
    served, state = server
    assert get(served.port, "/healthz")[::2] == (200, b"ok\n")
    assert get(served.port, "/readyz")[::2] == (503, b"not ready\n")
    state.update(healthy=False, ready=True)
    assert get(served.port, "/healthz")[::2] == (503, b"unhealthy\n")
    assert get(served.port, "/readyz?verbose")[::2] == (200, b"ready\n")


def test_unknown_path_names_the_endpoints(server: tuple[MetricsServer, dict[str, bool]]) -> None:
    status, _, body, _ = get(server[0].port, "/")
    assert status == 404 and b"/metrics, /healthz, /readyz" in body
