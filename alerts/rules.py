"""Alert rules: what to watch (topics, window), when to fire (rate, surge, volume, for) and how loudly."""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from alerts.fields import (
    LABEL_NAME,
    SEVERITIES,
    Fields,
    load_yaml_list,
    reject_duplicate_names,
    top_level_list,
)
from monitor.config import window_label
from monitor.snapshot import WindowSnapshot

RESERVED_LABELS = ("alertname", "news_topic", "severity")
"""Labels every alert carries; rules cannot override them."""

TEMPLATE_FIELDS = (
    "rule",
    "topic",
    "window",
    "severity",
    "rate",
    "expected_rate",
    "baseline",
    "baseline_std",
    "surge",
    "volume",
    "negative",
)
"""Placeholders an annotation template may use, e.g. ``"{topic}: {rate} negative over {window}"``."""

_RULE_FIELDS = {
    "name",
    "topics",
    "window",
    "rate_above",
    "surge_above",
    "require",
    "min_volume",
    "for",
    "repeat_interval",
    "cooldown",
    "severity",
    "labels",
    "annotations",
}


class RulesError(ValueError):
    """A rules file or rule is invalid; the message names the file, the rule and the field."""


def _frozen(mapping: Mapping[str, str] | None = None) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Rule:
    """One alert rule, evaluated per topic against the monitor's snapshot of ``window``."""

    name: str
    topics: tuple[str, ...] | None = None
    """Topic labels the rule watches; None watches every topic."""
    window: str = "5m"
    rate_above: float | None = None
    """Fire when the window's negative rate (fraction labelled negative) is above this."""
    surge_above: float | None = None
    """Fire when the surge statistic (z against the topic's baseline) is above this."""
    require: str = "all"
    """How ``rate_above`` and ``surge_above`` combine when both are set: ``all`` or ``any``."""
    min_volume: int = 20
    for_seconds: float = 0.0
    repeat_interval: float = 3600.0
    cooldown: float = 0.0
    severity: str = "warning"
    labels: Mapping[str, str] = field(default_factory=_frozen)
    annotations: Mapping[str, str] = field(default_factory=_frozen)

    def __post_init__(self) -> None:
        # Rules built in code skip the YAML validation; a rule without a condition would match everything.
        if self.rate_above is None and self.surge_above is None:
            raise ValueError(f"rule {self.name!r} needs rate_above, surge_above or both")
        if self.require not in ("all", "any"):
            raise ValueError(f"rule {self.name!r}: require must be 'all' or 'any', got {self.require!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"rule {self.name!r}: severity must be one of {', '.join(SEVERITIES)}")
        if self.repeat_interval <= 0:
            raise ValueError(f"rule {self.name!r}: repeat_interval must be positive")

    def applies_to(self, topic: str) -> bool:
        """True when the rule watches ``topic``."""
        return self.topics is None or topic in self.topics

    def holds(self, snapshot: WindowSnapshot) -> bool:
        """The rule's condition on one snapshot; a window below ``min_volume`` never holds."""
        if snapshot.volume < self.min_volume:
            return False
        checks: list[bool] = []
        if self.rate_above is not None:
            checks.append(snapshot.rate is not None and snapshot.rate > self.rate_above)
        if self.surge_above is not None:
            checks.append(snapshot.surge is not None and snapshot.surge > self.surge_above)
        return all(checks) if self.require == "all" else any(checks)


def _label_problem(key: str) -> str | None:
    if not LABEL_NAME.match(key) or key.startswith("__"):
        return "not a valid label name"
    if key in RESERVED_LABELS:
        return f"reserved label (set by finsent: {', '.join(RESERVED_LABELS)})"
    return None


MAX_ANNOTATION_CHARS = 4096
"""An annotation template padded wider than this ("{rate:>100000000}") is refused."""


def _annotation_problem(key: str) -> str | None:
    # Alertmanager refuses the whole alert (400) for an annotation name a label could not have.
    return None if LABEL_NAME.match(key) else "not a valid annotation name (letters, digits and _)"


def _template_problem(template: str) -> str | None:
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
        unknown = [name for name in names if name not in TEMPLATE_FIELDS]
        if unknown:
            return f"unknown placeholder {unknown[0]!r}; use {', '.join(TEMPLATE_FIELDS)}"
        # Every value an annotation gets is a string (engine._annotations): format with strings like them,
        # so a spec that fails on one ("{rate:{severity}}", "{rate:d}") fails here, at start-up.
        formatted = template.format_map(dict.fromkeys(TEMPLATE_FIELDS, "0.0%"))
    except (KeyError, ValueError, IndexError, AttributeError, TypeError) as exc:
        return f"invalid template {template!r} ({exc}); placeholders: {', '.join(TEMPLATE_FIELDS)}"
    if len(formatted) > MAX_ANNOTATION_CHARS:
        return f"template {template[:40]!r}... expands to over {MAX_ANNOTATION_CHARS} characters"
    return None


def _parse_rule(item: object, index: int, source: str) -> Rule:
    if not isinstance(item, Mapping):
        raise RulesError(f"{source}: rule #{index + 1}: expected a mapping, got {item!r}")
    name = item.get("name")
    label = f"rule {name!r}" if isinstance(name, str) and name.strip() else f"rule #{index + 1}"
    fields = Fields(item, f"{source}: {label}", RulesError)
    fields.reject_unknown(_RULE_FIELDS)
    name = fields.string("name")
    window_seconds = fields.duration("window", 300.0, positive=True)
    if window_seconds != int(window_seconds):
        fields.fail("window", f"must be whole seconds, got {item.get('window')!r}")
    rate_above = fields.number("rate_above", None, low=0.0, high=1.0)
    surge_above = fields.number("surge_above", None)
    if rate_above is None and surge_above is None:
        fields.fail("rate_above", "a rule needs rate_above, surge_above or both")
    annotations = fields.string_map("annotations", _annotation_problem)
    for key, template in annotations.items():
        problem = _template_problem(template)
        if problem:
            fields.fail(f"annotations.{key}", problem)
    return Rule(
        name=name,
        topics=fields.topic_list("topics"),
        window=window_label(int(window_seconds)),
        rate_above=rate_above,
        surge_above=surge_above,
        require=fields.string("require", "all", choices=("all", "any")),
        min_volume=fields.integer("min_volume", 20),
        for_seconds=fields.duration("for", 0.0),
        repeat_interval=fields.duration("repeat_interval", 3600.0, positive=True),
        cooldown=fields.duration("cooldown", 0.0),
        severity=fields.string("severity", "warning", choices=SEVERITIES),
        labels=_frozen(fields.string_map("labels", _label_problem)),
        annotations=_frozen(annotations),
    )


def parse_rules(data: object, source: str = "rules") -> list[Rule]:
    """Validate a parsed rules document (``{"rules": [...]}``) into rules; errors name source, rule and field."""
    items = top_level_list(data, "rules", source, RulesError)
    rules = [_parse_rule(item, index, source) for index, item in enumerate(items)]
    reject_duplicate_names((rule.name for rule in rules), source, "rule", RulesError)
    return rules


def load_rules(path: Path) -> list[Rule]:
    """Read and validate a YAML rules file with a top-level ``rules:`` list."""
    items, source = load_yaml_list(Path(path), "rules", RulesError)
    return parse_rules({"rules": items}, source)


def check_windows(rules: Iterable[Rule], windows: Iterable[str], source: str = "rules") -> None:
    """Fail when a rule watches a window the monitor does not keep (``windows`` like ``["5m", "1h"]``)."""
    known = set(windows)
    for rule in rules:
        if rule.window not in known:
            raise RulesError(
                f"{source}: rule {rule.name!r}: field 'window': the monitor keeps no {rule.window!r} window "
                f"(it keeps {', '.join(sorted(known))})"
            )
