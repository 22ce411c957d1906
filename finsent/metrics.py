"""Prometheus metrics of the classify stage and the /metrics, /healthz, /readyz HTTP server of every stage."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
)
from prometheus_client.exposition import MetricsHandler

from finsent.stage_health import StageHealth
from ingest import InvalidReason

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ClassifyMetrics:
    """The classify stage's finsent_ metrics (stream, model, drift), in one registry; an ingest Observer."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.consumed_total = Counter(
            "finsent_messages_consumed",
            "Records read from the input topic (re-reads after a rewind count again).",
            registry=r,
        )
        self.invalid_total = Counter(
            "finsent_messages_invalid", "Records sent to the DLQ, by reason.", ["reason"], registry=r
        )
        self.scored_total = Counter(
            "finsent_messages_scored",
            "Records scored and acknowledged.",
            ["news_topic", "sentiment"],
            registry=r,
        )
        self.batch_size = Histogram(
            "finsent_batch_size_messages", "Messages per micro-batch.", buckets=BATCH_BUCKETS, registry=r
        )
        self.inference_seconds = Histogram(
            "finsent_inference_latency_seconds",
            "Model time per micro-batch.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.end_to_end_seconds = Histogram(
            "finsent_end_to_end_latency_seconds",
            "From the input record's Kafka timestamp to the scored record's acknowledgement.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.health = StageHealth.of(r, "classify")
        self.truncated_total = Counter(
            "finsent_truncated_texts",
            "Texts longer than the token budget (max_tokens), scored on their first tokens.",
            registry=r,
        )
        self.commits_total = Counter("finsent_offset_commits", "Offset commits accepted.", registry=r)
        self.paused = Gauge(
            "finsent_fetch_paused", "1 while fetching is paused for backpressure.", registry=r
        )
        self.buffered = Gauge("finsent_buffered_messages", "Valid messages waiting for a batch.", registry=r)
        self.model_info = Info("finsent_model", "The model that scores the stream.", registry=r)
        self.model_swaps_total = Counter(
            "finsent_model_swaps", "Hot swaps to a new registry version.", registry=r
        )
        self.model_load_failures_total = Counter(
            "finsent_model_load_failures",
            "Registry versions that failed to load (old model kept).",
            registry=r,
        )
        self.retrain_requests_total = Counter(
            "finsent_retrain_requests",
            "Retrain requests written because drift passed its threshold.",
            registry=r,
        )
        self.drift = Gauge(
            "finsent_prediction_drift",
            "Jensen-Shannon divergence (nats) of the rolling predicted label distribution from training.",
            ["task"],
            registry=r,
        )
        self.confidence_mean = Gauge(
            "finsent_prediction_confidence_mean",
            "Mean top probability over the drift window.",
            ["task"],
            registry=r,
        )
        self.low_confidence_share = Gauge(
            "finsent_low_confidence_share",
            "Share of the drift window whose top probability is below the low-confidence threshold.",
            ["task"],
            registry=r,
        )
        # Bounded label sets exist at 0 from the start, so rate()/increase() see their first event.
        for reason in InvalidReason:
            self.invalid_total.labels(reason=reason.value)

    def set_model(self, version: str, variant: str, provider: str) -> None:
        """Publish finsent_model_info (an Info holds one label set: the previous version's is replaced)."""
        self.model_info.info({"version": version, "variant": variant, "provider": provider})

    def declare_labels(self, topics: Sequence[str], sentiments: Sequence[str]) -> None:
        """Create every topic x sentiment scored series at 0, so rate() sees each series' first increment."""
        for topic in topics:
            for sentiment in sentiments:
                self.scored_total.labels(news_topic=topic, sentiment=sentiment)

    def set_drift(
        self, task: str, divergence: float | None, confidence_mean: float, low_share: float
    ) -> None:
        """Publish one head's drift signals (divergence only when a training distribution is known)."""
        if divergence is not None:
            self.drift.labels(task=task).set(divergence)
        self.confidence_mean.labels(task=task).set(confidence_mean)
        self.low_confidence_share.labels(task=task).set(low_share)

    # Observer --------------------------------------------------------------

    def consumed(self, count: int) -> None:
        """Count records read."""
        self.consumed_total.inc(count)

    def invalid(self, reason: str) -> None:
        """Count one DLQ record."""
        self.invalid_total.labels(reason=reason).inc()

    def scored(self, topic: str, sentiment: str, end_to_end_seconds: float | None) -> None:
        """Count one scored record and its end-to-end latency."""
        self.scored_total.labels(news_topic=topic, sentiment=sentiment).inc()
        if end_to_end_seconds is not None:
            self.end_to_end_seconds.observe(end_to_end_seconds)

    def batch(self, size: int, inference_seconds: float) -> None:
        """Record one micro-batch."""
        self.batch_size.observe(size)
        self.inference_seconds.observe(inference_seconds)

    def lag(self, topic: str, partition: int, messages: int) -> None:
        """Set one partition's lag."""
        self.health.lag_messages.labels(topic=topic, partition=str(partition)).set(messages)

    def forget_lag(self, topic: str, partition: int) -> None:
        """Remove one partition's lag series (it moved to another replica, which reports it now)."""
        self.health.forget_lag(topic, partition)

    def committed(self, partitions: int) -> None:
        """Count one accepted commit."""
        self.commits_total.inc()

    def error(self, kind: str) -> None:
        """Count a recoverable failure."""
        self.health.stream_errors.labels(stage="classify", kind=kind).inc()

    def state(self, ready: bool, paused: bool, buffered: int) -> None:
        """Readiness, backpressure and buffer gauges."""
        self.health.ready.labels(stage="classify").set(1 if ready else 0)
        self.paused.set(1 if paused else 0)
        self.buffered.set(buffered)


class MetricsServer:
    """Serves /metrics from a registry plus /healthz (alive) and /readyz (ready) from callables."""

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        healthy: Callable[[], bool],
        ready: Callable[[], bool],
    ) -> None:
        handler = _handler_class(registry, healthy, ready)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)

    @property
    def port(self) -> int:
        """The bound port (useful when 0 was asked for)."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()


def _handler_class(
    registry: CollectorRegistry, healthy: Callable[[], bool], ready: Callable[[], bool]
) -> type[BaseHTTPRequestHandler]:
    # prometheus-client's handler serves /metrics (text or OpenMetrics by Accept, gzip, name[] filters).
    class Handler(MetricsHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                super().do_GET()
            elif path == "/healthz":
                ok = healthy()
                self._reply(200 if ok else 503, b"ok\n" if ok else b"unhealthy\n")
            elif path == "/readyz":
                ok = ready()
                self._reply(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
            else:
                self._reply(404, b"not found: try /metrics, /healthz, /readyz\n")

        def _reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    Handler.registry = registry
    return Handler
