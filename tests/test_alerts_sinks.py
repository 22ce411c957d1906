"""HTTP and Kafka senders at their edges: redirects, a receiver that trickles, a broker that is down."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from alerts import DeliveryError, KafkaSender, Subscription, WebhookSender
from tests.test_alerts_delivery import fire, hook


@pytest.fixture
def redirecting() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """A server that answers POST /hook-<code> with that redirect to /new, and GET with 200."""
    seen: list[tuple[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(("POST", self.path))
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(int(self.path.rsplit("-", 1)[1]))
            self.send_header("Location", "/new")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            seen.append(("GET", self.path))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("code", "permanent"), [(301, True), (308, True), (302, False), (303, False), (307, False)]
)
def test_a_redirect_is_a_failed_delivery_naming_the_location(
    redirecting: tuple[str, list[tuple[str, str]]], code: int, permanent: bool
) -> None:
    base, seen = redirecting
    _, event = fire()
    with pytest.raises(DeliveryError) as error:
        WebhookSender().send(hook(f"{base}/hook-{code}"), event, time.time())
    assert seen == [("POST", f"/hook-{code}")]  # never re-sent as a GET without the body
    assert f"HTTP {code}" in str(error.value) and f"{base}/new" in str(error.value)
    assert error.value.permanent is permanent


def test_a_trickling_receiver_is_cut_off_at_the_timeout() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        connection, _ = listener.accept()
        connection.recv(65536)
        response = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Pad: " + b"a" * 40 + b"\r\n\r\n"
        for byte in response:  # each byte well inside the timeout, the whole far beyond it
            if stop.wait(0.1):
                break
            try:
                connection.send(bytes([byte]))
            except OSError:
                break
        connection.close()

    threading.Thread(target=trickle, daemon=True).start()
    _, event = fire()
    started = time.monotonic()
    try:
        with pytest.raises(DeliveryError) as error:
            WebhookSender().send(
                hook(f"http://127.0.0.1:{listener.getsockname()[1]}/h", timeout_s=1.0), event, 0.0
            )
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        listener.close()
    assert elapsed < 2.0, elapsed
    assert not error.value.permanent and "timed out" in str(error.value)


def test_a_broker_that_is_down_fails_within_the_timeout() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The stage passes its own client settings; the subscription's timeout must still bound the attempt.
    sender = KafkaSender(f"127.0.0.1:{port}", {"bootstrap_timeout_ms": 5_000, "request_timeout_ms": 30_000})
    _, event = fire()
    try:
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(DeliveryError) as error:
                sender.send(Subscription("bus", "kafka", topic="alerts", timeout_s=1.0), event, 0.0)
            assert time.monotonic() - started < 2.5
            assert not error.value.permanent
    finally:
        sender.close()
