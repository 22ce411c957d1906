"""The monitor facade: observe scored messages in event time, snapshot every topic and window."""

from __future__ import annotations

import logging
import math
from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from monitor.config import OTHER_TOPIC, MonitorConfig, window_label
from monitor.dedupe import DedupeMemory
from monitor.snapshot import Headline, WindowSnapshot
from monitor.stats import RateBaseline, binomial_surge
from monitor.windows import WindowStore

log = logging.getLogger(__name__)

SENTIMENTS: tuple[str, ...] = ("negative", "neutral", "positive")
STATE_VERSION = 1


class Outcome(StrEnum):
    """What happened to one observed message."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    LATE = "late"


@dataclass(frozen=True)
class Observation:
    """The result of :meth:`Monitor.observe`: outcome, the bounded topic label and the event time used."""

    outcome: Outcome
    topic: str
    event_time: float
    clamped: bool
    """True when the event time was beyond the allowed skew ahead of processing time and was replaced."""


@dataclass(frozen=True)
class MonitorCounters:
    """Per-process counts of observations by outcome (not checkpointed: Prometheus handles resets)."""

    applied: int = 0
    duplicate: int = 0
    late: int = 0
    clamped_future: int = 0
    dedupe_evicted: int = 0


class Monitor:
    """Event-time windows, dedupe and baselines for every topic, with no I/O of its own."""

    def __init__(self, config: MonitorConfig | None = None) -> None:
        self.config = config if config is not None else MonitorConfig()
        self._store = WindowStore(self.config.bucket_seconds, self.config.top_k)
        self._dedupe = DedupeMemory(self.config.bucket_seconds, self.config.dedupe_max_ids)
        self._baselines: dict[str, RateBaseline] = {}
        self._known = frozenset(self.config.topics or ())
        self._max_event_time: float | None = None
        self._topic_max_event_time: dict[str, float] = {}
        self._counts = {outcome: 0 for outcome in Outcome}
        self._clamped = 0

    @property
    def max_event_time(self) -> float | None:
        """Latest event time applied so far."""
        return self._max_event_time

    @property
    def watermark(self) -> float | None:
        """Latest event time minus lateness: buckets before it are final and feed the baselines.

        Whether a message is late is judged against its own topic's latest event time
        (:meth:`topic_watermark`), not this.
        """
        if self._max_event_time is None:
            return None
        return self._max_event_time - self.config.allowed_lateness

    def topic_watermark(self, topic: str) -> float | None:
        """Event time before which a message of ``topic`` (a bounded label) is dropped as late.

        Per topic, because news.scored is keyed by topic label: a topic's messages arrive in order
        within their partition, but a backlog arrives one partition after another, so one watermark
        for all would make every partition read after the first late.
        """
        latest = self._topic_max_event_time.get(topic)
        return None if latest is None else latest - self.config.allowed_lateness

    def too_far_ahead(self, event_time: float, now: float) -> bool:
        """Whether an event time lies beyond ``max_future_skew`` ahead of processing time ``now`` (so is wrong)."""
        return event_time > now + self.config.future_skew

    @property
    def counters(self) -> MonitorCounters:
        """Counts of observations by outcome since this process started."""
        return MonitorCounters(
            applied=self._counts[Outcome.APPLIED],
            duplicate=self._counts[Outcome.DUPLICATE],
            late=self._counts[Outcome.LATE],
            clamped_future=self._clamped,
            dedupe_evicted=self._dedupe.evicted,
        )

    def topics(self) -> list[str]:
        """Topic labels that snapshots cover: the configured ones plus any seen, sorted."""
        return sorted(self._known | self._baselines.keys())

    def topic_label(self, topic: str) -> str:
        """The bounded label a topic is counted under (unknown topics become ``other``)."""
        if self.config.topics is not None:
            return topic if topic in self._known else OTHER_TOPIC
        if not topic or topic == OTHER_TOPIC:
            return OTHER_TOPIC
        if topic in self._baselines:
            return topic
        named = len(self._baselines) - (OTHER_TOPIC in self._baselines)
        return topic if named < self.config.max_topics else OTHER_TOPIC

    def observe(
        self,
        message_id: str,
        topic: str,
        sentiment: str,
        p_negative: float,
        event_time: float,
        headline: str,
        *,
        now: float | None = None,
    ) -> Observation:
        """Count one scored message once, in the bucket of its event time (seconds since the epoch).

        ``now`` is the processing time; when given, an event time beyond ``max_future_skew`` ahead of it
        is replaced by the latest event time seen (by ``now`` before there is one) and does not move the
        watermark. Raises ValueError on malformed fields.
        """
        label = sentiment.strip().lower()
        if label not in SENTIMENTS:
            raise ValueError(f"unknown sentiment {sentiment!r}; expected one of {', '.join(SENTIMENTS)}")
        if not isinstance(message_id, str) or not message_id:
            raise ValueError("message id must be a non-empty string")
        if not (math.isfinite(p_negative) and 0.0 <= p_negative <= 1.0):
            raise ValueError(f"p_negative must lie in [0, 1], got {p_negative!r}")
        if not math.isfinite(event_time):
            raise ValueError(f"event_time must be finite, got {event_time!r}")

        clamped = False
        if now is not None and self.too_far_ahead(event_time, now):
            # The timestamp is wrong. The stream's latest event time is the best guess of where the
            # message belongs; processing time is not: in a backlog it would make the rest late.
            event_time = now if self._max_event_time is None else self._max_event_time
            clamped = True
            self._clamped += 1
        bounded = self.topic_label(topic)

        watermark = self.topic_watermark(bounded)
        if message_id in self._dedupe:
            outcome = Outcome.DUPLICATE
        elif (watermark is not None and event_time < watermark) or self._store.expired(event_time):
            # The second: another topic's messages moved event time on, and this one is older than
            # every window now.
            outcome = Outcome.LATE
        else:
            outcome = Outcome.APPLIED
            if not clamped:
                self._advance(event_time)
                if event_time > self._topic_max_event_time.get(bounded, -math.inf):
                    self._topic_max_event_time[bounded] = event_time
            if bounded not in self._baselines:
                self._baselines[bounded] = RateBaseline(
                    self.config.baseline_half_life,
                    self.config.baseline_min_samples,
                    self.config.baseline_clip_z,
                )
            text = headline[: self.config.headline_max_chars]
            self._store.add(
                bounded,
                event_time,
                label == "negative",
                p_negative,
                Headline(p_negative, message_id, text, event_time),
            )
            self._dedupe.add(message_id, event_time)
        self._counts[outcome] += 1
        return Observation(outcome, bounded, event_time, clamped)

    def _advance(self, event_time: float) -> None:
        """Move the watermark; feed buckets it closes to the baselines, then expire old state."""
        previous = self._max_event_time
        if previous is not None and event_time <= previous:
            return
        self._max_event_time = event_time
        watermark = event_time - self.config.allowed_lateness
        bucket = self.config.bucket_seconds
        # Bucket j is closed, its contents final, once its end (j + 1) * bucket is at or before the watermark.
        closed = math.floor(watermark / bucket) - 1
        if previous is not None:
            first = math.floor((previous - self.config.allowed_lateness) / bucket)
            self._feed_baselines(first, closed, math.floor(previous / bucket))
        self._store.expire(self._oldest_bucket_kept(event_time))
        self._dedupe.expire(event_time - self.config.dedupe_seconds)

    def _oldest_bucket_kept(self, max_event_time: float) -> int:
        """The first bucket of the longest window ending at the watermark: older ones count nowhere."""
        bucket = self.config.bucket_seconds
        watermark = max_event_time - self.config.allowed_lateness
        return math.floor(watermark / bucket) - self.config.longest_horizon // bucket + 1

    def _feed_baselines(self, first: int, last: int, newest: int) -> None:
        """Sample the reference window ending at each newly closed bucket ``first..last``.

        ``newest`` is the newest bucket holding events, so windows ending past it plus the span are
        empty and a long gap in the stream costs nothing.
        """
        span = self.config.reference_horizon // self.config.bucket_seconds
        for end in range(first, min(last, newest + span - 1) + 1):
            at = float((end + 1) * self.config.bucket_seconds)
            for topic, baseline in self._baselines.items():
                totals = self._store.totals(topic, end - span + 1, end)
                if totals.volume >= self.config.min_volume and totals.rate is not None:
                    baseline.update(totals.rate, at, float(totals.volume))

    def snapshot(self, now: float, topics: Collection[str] | None = None) -> list[WindowSnapshot]:
        """Every topic (or those of ``topics``) over every window ending at ``now`` (event time).

        Sorted by topic then horizon. Windows are whole buckets, the newest one partial, so a window
        spans between its horizon less one bucket and its horizon. ``now`` should not be older than the
        watermark, whose buckets older than the longest horizon are gone.
        """
        bucket = self.config.bucket_seconds
        last = math.floor(now / bucket)
        snapshots: list[WindowSnapshot] = []
        for topic in self.topics():
            if topics is not None and topic not in topics:
                continue
            baseline = self._baselines[topic].get() if topic in self._baselines else None
            for horizon in sorted(self.config.horizons):
                first = last - horizon // bucket + 1
                totals = self._store.totals(topic, first, last)
                surge = None
                if baseline is not None:
                    surge = binomial_surge(
                        totals.negative,
                        totals.volume,
                        baseline.mean,
                        self.config.min_volume,
                        baseline.extra_variance,
                    )
                snapshots.append(
                    WindowSnapshot(
                        topic=topic,
                        window=window_label(horizon),
                        window_seconds=horizon,
                        end=now,
                        volume=totals.volume,
                        negative=totals.negative,
                        rate=totals.rate,
                        expected_rate=totals.expected_rate,
                        baseline_mean=None if baseline is None else baseline.mean,
                        baseline_std=None if baseline is None else baseline.std,
                        surge=surge,
                        headlines=self._store.top(topic, first, last, self.config.top_k),
                    )
                )
        return snapshots

    def to_state(self) -> dict[str, Any]:
        """Windows, baselines, dedupe memory and watermark as a JSON-serialisable dict."""
        return {
            "version": STATE_VERSION,
            "max_event_time": self._max_event_time,
            "topic_max_event_time": dict(sorted(self._topic_max_event_time.items())),
            "windows": self._store.to_state(),
            "dedupe": self._dedupe.to_state(),
            "baselines": {topic: b.to_state() for topic, b in sorted(self._baselines.items())},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], config: MonitorConfig | None = None) -> Monitor:
        """Resume from :meth:`to_state` output under ``config`` (which may differ from the saved one).

        Buckets saved under a different bucket width cannot be re-cut and are discarded; baselines and
        dedupe memory are always kept. ValueError when the state is malformed.
        """
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"unsupported monitor state version {state.get('version')!r}; expected {STATE_VERSION}"
            )
        try:
            return cls._from_state(state, config)
        except KeyError as error:
            raise ValueError(f"malformed monitor state: missing field {error}") from None
        except (TypeError, ValueError, AttributeError, IndexError, OverflowError) as error:
            raise ValueError(f"malformed monitor state: {error}") from None

    @classmethod
    def _from_state(cls, state: dict[str, Any], config: MonitorConfig | None) -> Monitor:
        monitor = cls(config)
        cfg = monitor.config
        max_event_time = state["max_event_time"]
        if max_event_time is not None:
            monitor._max_event_time = float(max_event_time)
            if not math.isfinite(monitor._max_event_time):
                raise ValueError(f"max_event_time must be finite, got {max_event_time!r}")
        # Absent from checkpoints written before lateness was per topic: each topic's next message
        # then starts its watermark.
        for topic, latest in state.get("topic_max_event_time", {}).items():
            monitor._topic_max_event_time[str(topic)] = float(latest)
            if not math.isfinite(monitor._topic_max_event_time[str(topic)]):
                raise ValueError(f"topic_max_event_time of {topic!r} must be finite, got {latest!r}")
        if int(state["windows"]["bucket_seconds"]) == cfg.bucket_seconds:
            monitor._store = WindowStore.from_state(state["windows"], cfg.top_k)
        else:
            log.warning(
                "monitor checkpoint has %ss buckets, config has %ss: window counts restart empty",
                state["windows"]["bucket_seconds"],
                cfg.bucket_seconds,
            )
        if monitor._max_event_time is not None:
            monitor._store.expire(monitor._oldest_bucket_kept(monitor._max_event_time))
        monitor._dedupe = DedupeMemory.from_state(state["dedupe"], cfg.dedupe_max_ids)
        for topic, saved in state["baselines"].items():
            baseline = RateBaseline.from_state(saved)
            # The learnt estimate carries over; how it keeps learning follows the current config.
            baseline.half_life = cfg.baseline_half_life
            baseline.min_samples = cfg.baseline_min_samples
            baseline.clip_z = cfg.baseline_clip_z
            monitor._baselines[str(topic)] = baseline
        return monitor
