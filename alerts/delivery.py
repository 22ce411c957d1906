"""What every sink shares: the failure type that says retry or give up, HTTP POST, and backoff arithmetic."""

from __future__ import annotations

import http.client
import random
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol

from alerts.engine import AlertEvent
from alerts.subscriptions import Subscription

# 408 Request Timeout and 429 Too Many Requests are the receiver asking us to come back later.
RETRYABLE_4XX = (408, 429)


class DeliveryError(Exception):
    """A delivery attempt failed; ``permanent`` failures are not retried."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


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
    """POST ``body``; the 2xx status, or :class:`DeliveryError` (permanent for 4xx other than 408/429)."""
    with unsendable_is_permanent(f"POST {url} failed"):
        # http.client would send port 70000 to 70000 - 65536; .port raises ValueError instead.
        _ = urllib.parse.urlsplit(url).port
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json", **headers}
        )
        return _post(request, url, timeout)


def _post(request: urllib.request.Request, url: str, timeout: float) -> int:
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        detail = exc.read(300).decode("utf-8", "replace").strip()
        permanent = 400 <= exc.code < 500 and exc.code not in RETRYABLE_4XX
        raise DeliveryError(f"HTTP {exc.code} from {url}: {detail}", permanent=permanent) from exc
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
