"""Rule lifecycle per (rule, topic): inactive -> pending -> firing -> resolved, with evidence and stable ids.

The engine is pure: no clock of its own, no I/O. ``now`` is the monitor's clock (event time), so a
replay produces the same alerts as the live run did.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from alerts.rules import Rule
from monitor.snapshot import WindowSnapshot

log = logging.getLogger(__name__)

STATE_VERSION = 1
MAX_HEADLINES_IN_ANNOTATION = 5


def fingerprint(rule_name: str, topic: str) -> str:
    """Stable id of one rule on one topic: the first 16 hex digits of sha256(rule, NUL, topic)."""
    digest = hashlib.sha256(f"{rule_name}\x00{topic}".encode()).hexdigest()
    return digest[:16]


@dataclass(frozen=True)
class Evidence:
    """What the monitor saw when the alert changed: the window's numbers and its most negative headlines."""

    window: str
    window_seconds: int
    rate: float | None
    expected_rate: float | None
    baseline_mean: float | None
    baseline_std: float | None
    surge: float | None
    volume: int
    negative: int
    headlines: tuple[dict[str, Any], ...]
    """``{"id", "headline", "p_negative"}`` for the most negative messages, most negative first."""

    @classmethod
    def from_snapshot(cls, snapshot: WindowSnapshot) -> Evidence:
        """Evidence from one monitor snapshot."""
        return cls(
            window=snapshot.window,
            window_seconds=snapshot.window_seconds,
            rate=snapshot.rate,
            expected_rate=snapshot.expected_rate,
            baseline_mean=snapshot.baseline_mean,
            baseline_std=snapshot.baseline_std,
            surge=snapshot.surge,
            volume=snapshot.volume,
            negative=snapshot.negative,
            headlines=tuple(
                {"id": h.id, "headline": h.text, "p_negative": h.p_negative} for h in snapshot.headlines
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        data = asdict(self)
        data["headlines"] = [dict(h) for h in self.headlines]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evidence:
        """Rebuild from :meth:`to_dict` output."""
        return cls(
            window=str(data["window"]),
            window_seconds=int(data["window_seconds"]),
            rate=_opt_float(data.get("rate")),
            expected_rate=_opt_float(data.get("expected_rate")),
            baseline_mean=_opt_float(data.get("baseline_mean")),
            baseline_std=_opt_float(data.get("baseline_std")),
            surge=_opt_float(data.get("surge")),
            volume=int(data["volume"]),
            negative=int(data["negative"]),
            headlines=tuple(
                {"id": str(h["id"]), "headline": str(h["headline"]), "p_negative": float(h["p_negative"])}
                for h in data.get("headlines", ())
            ),
        )


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _decimal(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


@dataclass(frozen=True)
class AlertEvent:
    """One notification: a rule on a topic started firing, is still firing (a repeat), or resolved."""

    fingerprint: str
    rule: str
    topic: str
    status: str
    """``firing`` or ``resolved``."""
    severity: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float
    """When the alert started firing (monitor clock, epoch seconds)."""
    ends_at: float | None
    """When it resolved; None while firing."""
    evidence: Evidence
    notification_key: str
    """Idempotency key: the same logical notification always carries the same key."""
    repeat: int = 0
    """0 for the first firing notification, n for the n-th re-notification while still firing."""
    repeat_interval: float = 3600.0
    """The rule's repeat interval, so sinks can size expiries (Alertmanager's endsAt)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (also the Kafka message value)."""
        data = asdict(self)
        data["evidence"] = self.evidence.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlertEvent:
        """Rebuild from :meth:`to_dict` output."""
        return cls(
            fingerprint=str(data["fingerprint"]),
            rule=str(data["rule"]),
            topic=str(data["topic"]),
            status=str(data["status"]),
            severity=str(data["severity"]),
            labels={str(k): str(v) for k, v in data["labels"].items()},
            annotations={str(k): str(v) for k, v in data["annotations"].items()},
            starts_at=float(data["starts_at"]),
            ends_at=_opt_float(data.get("ends_at")),
            evidence=Evidence.from_dict(data["evidence"]),
            notification_key=str(data["notification_key"]),
            repeat=int(data.get("repeat", 0)),
            repeat_interval=float(data.get("repeat_interval", 3600.0)),
        )


@dataclass(frozen=True)
class ActiveAlert:
    """A pending or firing alert; ``since`` is when it became pending or started firing."""

    fingerprint: str
    rule: str
    topic: str
    severity: str
    state: str
    since: float


@dataclass
class _Track:
    rule: str
    topic: str
    state: str = "inactive"
    pending_since: float | None = None
    starts_at: float | None = None
    last_notified: float | None = None
    repeats: int = 0
    resolved_at: float | None = None
    labels: dict[str, str] | None = None
    """The labels it fired with, so a resolve still matches them after its rule is edited or removed."""


def _key(fp: str, status: str, starts_at: float, repeat: int = 0) -> str:
    # Whole milliseconds keep the key identical after a float round trip through JSON or SQLite.
    key = f"{fp}:{status}:{round(starts_at * 1000)}"
    return f"{key}:r{repeat}" if repeat else key


def _labels(rule: Rule, topic: str) -> dict[str, str]:
    labels = {"alertname": rule.name, "news_topic": topic, "severity": rule.severity}
    labels.update((k, v) for k, v in rule.labels.items() if k not in labels)
    return labels


def _fired_labels(rule: Rule, track: _Track) -> dict[str, str]:
    """The labels the alert fired with.

    A repeat or resolve after the rule was edited (severity, labels) must still match the alert
    receivers hold, and reach the subscriptions the firing reached.
    """
    return dict(track.labels) if track.labels is not None else _labels(rule, track.topic)


def _annotations(rule: Rule, topic: str, evidence: Evidence) -> dict[str, str]:
    values = {
        "rule": rule.name,
        "topic": topic,
        "window": evidence.window,
        "severity": rule.severity,
        "rate": _percent(evidence.rate),
        "expected_rate": _percent(evidence.expected_rate),
        "baseline": _percent(evidence.baseline_mean),
        "baseline_std": _percent(evidence.baseline_std),
        "surge": _decimal(evidence.surge),
        "volume": str(evidence.volume),
        "negative": str(evidence.negative),
    }
    headlines = "\n".join(
        f"[{h['id']}] {h['headline']} (p_negative={h['p_negative']:.2f})"
        for h in evidence.headlines[:MAX_HEADLINES_IN_ANNOTATION]
    )
    annotations = {
        "summary": "{topic}: {rate} negative over {window} (baseline {baseline})".format_map(values),
        "description": (
            "Rule {rule} on topic {topic}: {negative} of {volume} messages negative over the last {window} "
            "(rate {rate}, mean p_negative {expected_rate}); baseline {baseline} +/- {baseline_std}, "
            "surge z {surge}."
        ).format_map(values),
        "rate": values["rate"],
        "baseline": values["baseline"],
        "surge": values["surge"],
        "volume": values["volume"],
        "window": evidence.window,
        "headlines": headlines,
    }
    for key, template in rule.annotations.items():
        try:
            annotations[key] = template.format_map(values)
        except (KeyError, ValueError, IndexError, AttributeError, TypeError):
            # Checked when the rules load; never let one template stop the alert's notifications.
            annotations[key] = template
    return annotations


class AlertEngine:
    """Tracks every (rule, topic) pair and turns monitor snapshots into alert events.

    Lifecycle per pair: condition true -> pending (no event); held for ``for_seconds`` -> firing (event);
    still true -> a repeat ``firing`` event every ``repeat_interval``; false while firing -> ``resolved``
    (event); false while pending -> inactive (no event). A window below ``min_volume`` counts as the
    condition being false, so a firing alert whose topic goes quiet resolves: we would rather say
    "resolved" than keep claiming a negative surge on too few messages to tell. After a resolve, the
    pair may go pending again but cannot fire until ``cooldown`` has passed.

    Restored from a state whose firing alert's rule was since removed or no longer watches its topic, the
    engine resolves that alert at the next :meth:`evaluate`. A topic is never evaluated twice at the same
    or an earlier ``now``, so window records replayed after a crash change nothing.
    """

    def __init__(self, rules: Sequence[Rule], state: Mapping[str, Any] | None = None) -> None:
        self._rules = {rule.name: rule for rule in rules}
        if len(self._rules) != len(rules):
            raise ValueError("rule names must be unique")
        self._tracks: dict[str, _Track] = {}
        # Firing alerts whose rule was removed or no longer watches their topic: resolved by the next evaluate().
        self._retired: dict[str, _Track] = {}
        # Per topic, the latest `now` evaluated: a window record replayed after a crash is at or before it.
        self._evaluated: dict[str, float] = {}
        if state:
            try:
                self._restore(state)
            except (AttributeError, KeyError, TypeError, ValueError) as error:
                raise ValueError(f"saved alert engine state is malformed: {error!r}") from None

    def _restore(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            log.warning("ignoring alert engine state of unknown version %r", state.get("version"))
            return
        self._evaluated = {str(topic): float(now) for topic, now in dict(state.get("evaluated", {})).items()}
        for fp, entry in dict(state.get("alerts", {})).items():
            rule, topic = str(entry["rule"]), str(entry["topic"])
            if fingerprint(rule, topic) != fp:
                continue
            labels = entry.get("labels")
            track = _Track(
                rule=rule,
                topic=topic,
                state=str(entry["state"]),
                pending_since=_opt_float(entry.get("pending_since")),
                starts_at=_opt_float(entry.get("starts_at")),
                last_notified=_opt_float(entry.get("last_notified")),
                repeats=int(entry.get("repeats", 0)),
                resolved_at=_opt_float(entry.get("resolved_at")),
                labels=None if labels is None else {str(k): str(v) for k, v in labels.items()},
            )
            if rule in self._rules and self._rules[rule].applies_to(topic):
                self._tracks[fp] = track
            elif track.state == "firing":
                self._retire(fp, track)
            # A pending or cooling-down pair of a rule that no longer applies has nothing to tell anyone.

    def _retire(self, fp: str, track: _Track) -> None:
        rule = self._rules.get(track.rule)
        if track.labels is None and rule is not None:
            track.labels = _labels(rule, track.topic)
        if track.labels is None:
            # State saved before labels were kept: without them the resolve could not match what fired.
            log.warning(
                "alert %s on %s: its rule is gone and the saved state has no labels; not sending a resolve",
                track.rule,
                track.topic,
            )
            return
        self._retired[fp] = track

    @property
    def rules(self) -> list[Rule]:
        """The rules, in configuration order."""
        return list(self._rules.values())

    def evaluate(self, snapshots: Sequence[WindowSnapshot], now: float) -> list[AlertEvent]:
        """Advance every (rule, topic) pair that has a snapshot for the rule's window; the events that result.

        A topic evaluated at ``now`` or later before (a record replayed after a crash) is skipped.
        """
        events = self._resolve_retired(now)
        latest = {(s.topic, s.window): s for s in snapshots if now > self._evaluated.get(s.topic, -math.inf)}
        for rule in self._rules.values():
            for (topic, window), snapshot in sorted(latest.items()):
                if window != rule.window or not rule.applies_to(topic):
                    continue
                self._evaluated[topic] = now
                fp = fingerprint(rule.name, topic)
                track = self._tracks.get(fp) or _Track(rule.name, topic)
                event = self._step(rule, fp, track, snapshot, now)
                if event is not None:
                    events.append(event)
                if track.state == "inactive" and (
                    track.resolved_at is None or now >= track.resolved_at + rule.cooldown
                ):
                    self._tracks.pop(fp, None)
                else:
                    self._tracks[fp] = track
        return events

    def _resolve_retired(self, now: float) -> list[AlertEvent]:
        events: list[AlertEvent] = []
        for fp, track in sorted(self._retired.items()):
            assert track.starts_at is not None and track.labels is not None
            # Never before its last notice: `now` may come from a record replayed after the restart.
            ends_at = max(now, track.last_notified or track.starts_at)
            labels = track.labels
            events.append(
                AlertEvent(
                    fingerprint=fp,
                    rule=track.rule,
                    topic=track.topic,
                    status="resolved",
                    severity=labels.get("severity", ""),
                    labels=dict(labels),
                    annotations={
                        "summary": f"{track.topic}: rule {track.rule} no longer watches this topic",
                        "description": f"Rule {track.rule} was removed or no longer applies to topic "
                        f"{track.topic}; its alert is resolved without a new evaluation.",
                    },
                    starts_at=track.starts_at,
                    ends_at=ends_at,
                    evidence=Evidence("", 0, None, None, None, None, None, 0, 0, ()),
                    notification_key=_key(fp, "resolved", track.starts_at),
                )
            )
        self._retired.clear()
        return events

    def _step(
        self, rule: Rule, fp: str, track: _Track, snapshot: WindowSnapshot, now: float
    ) -> AlertEvent | None:
        times = (track.pending_since, track.starts_at, track.last_notified, track.resolved_at)
        seen = [t for t in times if t is not None]
        if seen and now < max(seen):
            # The clock went back (a replay after a restart): never resolve before the alert started.
            return None
        holds = rule.holds(snapshot)
        if track.state == "firing":
            assert track.starts_at is not None and track.last_notified is not None
            if not holds:
                track.state, track.resolved_at, track.pending_since = "inactive", now, None
                key = _key(fp, "resolved", track.starts_at)
                return self._event(rule, track, snapshot, "resolved", key, ends_at=now)
            if now - track.last_notified >= rule.repeat_interval:
                track.repeats += 1
                track.last_notified = now
                key = _key(fp, "firing", track.starts_at, track.repeats)
                return self._event(rule, track, snapshot, "firing", key)
            return None
        if not holds:
            track.state, track.pending_since = "inactive", None
            return None
        if track.state == "inactive":
            track.state, track.pending_since = "pending", now
        assert track.pending_since is not None
        cooled = track.resolved_at is None or now >= track.resolved_at + rule.cooldown
        if now - track.pending_since >= rule.for_seconds and cooled:
            track.state, track.starts_at, track.last_notified, track.repeats = "firing", now, now, 0
            track.labels = _labels(rule, track.topic)
            return self._event(rule, track, snapshot, "firing", _key(fp, "firing", now))
        return None

    def _event(
        self,
        rule: Rule,
        track: _Track,
        snapshot: WindowSnapshot,
        status: str,
        key: str,
        ends_at: float | None = None,
    ) -> AlertEvent:
        assert track.starts_at is not None
        evidence = Evidence.from_snapshot(snapshot)
        labels = _fired_labels(rule, track)
        return AlertEvent(
            fingerprint=fingerprint(rule.name, track.topic),
            rule=rule.name,
            topic=track.topic,
            status=status,
            severity=labels.get("severity", rule.severity),
            labels=labels,
            annotations=_annotations(rule, track.topic, evidence),
            starts_at=track.starts_at,
            ends_at=ends_at,
            evidence=evidence,
            notification_key=key,
            repeat=track.repeats if status == "firing" else 0,
            repeat_interval=rule.repeat_interval,
        )

    def active(self) -> list[ActiveAlert]:
        """Pending and firing alerts, ordered by rule then topic."""
        result: list[ActiveAlert] = []
        for fp, track in sorted(self._tracks.items(), key=lambda item: (item[1].rule, item[1].topic)):
            if track.state == "inactive":
                continue
            since = track.starts_at if track.state == "firing" else track.pending_since
            assert since is not None
            rule = self._rules[track.rule]
            # A firing alert keeps the severity it fired with, as its events do; pending has fired nothing.
            severity = rule.severity
            if track.state == "firing":
                severity = _fired_labels(rule, track).get("severity", severity)
            result.append(ActiveAlert(fp, track.rule, track.topic, severity, track.state, since))
        return result

    def to_state(self) -> dict[str, Any]:
        """JSON-serialisable state; ``AlertEngine(rules, state=...)`` resumes without re-firing."""
        tracks = {**self._tracks, **self._retired}  # a retired alert not yet resolved is kept until it is
        return {
            "version": STATE_VERSION,
            "alerts": {fp: asdict(track) for fp, track in sorted(tracks.items())},
            "evaluated": dict(sorted(self._evaluated.items())),
        }
