"""What every sink shares: the failure type that says retry or give up, HTTP POST, and backoff arithmetic."""

from __future__ import annotations

import email.utils
import http.client
import io
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol, cast

from alerts.engine import AlertEvent
from alerts.subscriptions import Subscription

# 408 Request Timeout and 429 Too Many Requests are the receiver asking us to come back later.
RETRYABLE_4XX = (408, 429)


class DeliveryError(Exception):
    """A delivery attempt failed; ``permanent`` failures are not retried.

    ``retry_after``: seconds the receiver asked us to wait (its ``Retry-After`` header), if it said.
    """

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """A ``Retry-After`` header's wait in seconds (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


class Sender(Protocol):
    """Delivers one notification to one subscription, raising :class:`DeliveryError` on failure."""

    def send(self, subscription: Subscription, event: AlertEvent, now: float) -> None:
        """Deliver ``event``; ``now`` is the dispatcher's wall clock."""

    def close(self) -> None:
        """Release connections."""


@contextmanager
def unsendable_is_permanent(what: str) -> Iterator[None]:
    """Turn a ValueError or OverflowError (a URL or a time the stdlib refuses) into a permanent DeliveryError.

    Retrying cannot fix these; as unexpected exceptions they would be logged with a traceback on every
    attempt until ``max_age``.
    """
    try:
        yield
    except (ValueError, OverflowError) as exc:
        raise DeliveryError(f"{what}: {exc}", permanent=True) from exc


def post_json(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
    """POST ``body``; the 2xx status, or :class:`DeliveryError` (permanent for 4xx other than 408/429).

    ``timeout`` bounds the whole attempt (connecting, sending, the response's status and headers), not each
    socket operation. Redirects are not followed: a 3xx is a failed delivery naming the ``Location``.
    """
    with unsendable_is_permanent(f"POST {url} failed"):
        # http.client would send port 70000 to 70000 - 65536; .port raises ValueError instead.
        _ = urllib.parse.urlsplit(url).port
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json", **headers}
        )
        return _post(request, url, timeout)


class _DeadlineReader(io.RawIOBase):
    """The response side of a :class:`_DeadlineSocket`: every read gets only the time left."""

    def __init__(self, owner: _DeadlineSocket, raw: io.RawIOBase) -> None:
        super().__init__()
        self._owner, self._raw = owner, raw

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self._owner.arm()
        return self._raw.readinto(buffer)

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        self._raw.close()  # lets the socket close once urllib has dropped it too
        super().close()


class _DeadlineSocket:
    """A connected socket whose sends and receives together end by one deadline.

    A socket timeout applies to each call, so a receiver trickling a byte at a time could hold an attempt
    far beyond it; this sets the timeout to the time left before every call instead.
    """

    def __init__(self, sock: socket.socket, deadline: float, timeout: float) -> None:
        self._sock, self._deadline, self._timeout = sock, deadline, timeout

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def arm(self) -> None:
        """Set the socket timeout to the time left; TimeoutError once none is."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out: no complete response within {self._timeout:g}s")
        self._sock.settimeout(left)

    def sendall(self, data: bytes) -> None:
        self.arm()
        self._sock.sendall(data)

    def makefile(self, *args: Any, **kwargs: Any) -> io.BufferedReader:
        # http.client reads responses only through makefile("rb").
        return io.BufferedReader(_DeadlineReader(self, self._sock.makefile("rb", buffering=0)))


class _DeadlineHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, /, *, timeout: float = 5.0, **kwargs: Any) -> None:
        # urllib always passes the request's timeout; the default only matches http.client's signature.
        super().__init__(host, timeout=timeout, **kwargs)
        self._total, self._deadline = timeout, time.monotonic() + timeout

    def connect(self) -> None:
        super().connect()
        self.sock = cast(socket.socket, _DeadlineSocket(self.sock, self._deadline, self._total))


class _DeadlineHTTPSConnection(_DeadlineHTTPConnection, http.client.HTTPSConnection):
    pass


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_DeadlineHTTPConnection, req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_DeadlineHTTPSConnection, req)  # the default TLS context, as urlopen uses


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # urllib would re-send a POST answered with 301/302/303 as a GET without the body, and count it delivered.
    def redirect_request(self, *args: Any) -> None:
        return None


def _post(request: urllib.request.Request, url: str, timeout: float) -> int:
    opener = urllib.request.build_opener(_NoRedirects, _DeadlineHTTPHandler, _DeadlineHTTPSHandler)
    try:
        with opener.open(request, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        retry_after = retry_after_seconds(exc.headers.get("Retry-After"), time.time())
        if 300 <= exc.code < 400:
            # A moved receiver is a configuration problem (301/308: permanent); 302/303/307 may be passing.
            raise DeliveryError(
                f"HTTP {exc.code} from {url}: redirects to {_location(exc)}; redirects are not followed "
                "(configure the final URL)",
                permanent=exc.code in (301, 308),
                retry_after=retry_after,
            ) from exc
        try:
            detail = exc.read(300).decode("utf-8", "replace").strip()
        except (OSError, http.client.HTTPException):
            detail = ""
        permanent = 400 <= exc.code < 500 and exc.code not in RETRYABLE_4XX
        raise DeliveryError(
            f"HTTP {exc.code} from {url}: {detail}", permanent=permanent, retry_after=retry_after
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"POST {url} failed: {reason}") from exc
    except http.client.InvalidURL as exc:  # e.g. a non-numeric port: the same on every attempt
        raise DeliveryError(f"POST {url} failed: {exc}", permanent=True) from exc
    except http.client.HTTPException as exc:  # a malformed response (BadStatusLine, IncompleteRead)
        raise DeliveryError(f"POST {url} failed: {exc!r}") from exc
    if not 200 <= status < 300:
        raise DeliveryError(f"HTTP {status} from {url}")
    return status


def _location(error: urllib.error.HTTPError) -> str:
    location = error.headers.get("Location")
    return "no Location" if location is None else urllib.parse.urljoin(error.url, location)


def backoff_delay(attempt: int, initial: float, maximum: float) -> float:
    """Delay before retry number ``attempt`` (1-based): ``initial * 2**(attempt-1)``, capped at ``maximum``."""
    if attempt < 1:
        return 0.0
    # Cap the exponent first: 2.0**2000 overflows a float.
    exponent = min(attempt - 1, 64)
    return float(min(maximum, initial * 2.0**exponent))


def jittered(delay: float, rng: random.Random | None = None) -> float:
    """``delay`` scaled by a random factor in [0.5, 1]: spreads retries of many rows after an outage."""
    return delay * (0.5 + 0.5 * (rng or random).random())
