"""Rule and subscription files: valid examples load, every mistake names the file, the item and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from alerts import (
    AlertEngine,
    Rule,
    RulesError,
    Subscription,
    SubscriptionsError,
    check_windows,
    load_rules,
    load_subscriptions,
    parse_rules,
    parse_subscriptions,
)
from monitor import WindowSnapshot
from tests.test_alerts_engine import rule, snap

EXAMPLES = Path(__file__).resolve().parents[1] / "deploy" / "examples"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_example_rules_load() -> None:
    rules = load_rules(EXAMPLES / "rules.yaml")
    by_name = {r.name: r for r in rules}
    fed = by_name["fed-negative-surge"]
    assert fed.topics == ("Fed | Central Banks", "Macro")
    assert (fed.window, fed.surge_above, fed.rate_above) == ("5m", 4.0, None)
    assert (fed.for_seconds, fed.repeat_interval, fed.cooldown) == (120, 3600, 900)
    assert fed.severity == "critical" and dict(fed.labels) == {"team": "rates"}
    assert by_name["negative-majority"].topics is None
    check_windows(rules, ["5m", "15m", "1h"])


def test_example_subscriptions_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINSENT_WEBHOOK_SECRET", "s3cret")
    subs = {s.name: s for s in load_subscriptions(EXAMPLES / "subscriptions.yaml")}
    hook = subs["risk-desk"]
    assert (hook.kind, hook.secret, hook.min_severity, hook.max_age_s) == (
        "webhook",
        "s3cret",
        "warning",
        21600,
    )
    assert "s3cret" not in repr(hook)
    assert (subs["alerts-topic"].kind, subs["alerts-topic"].topic) == ("kafka", "alerts")
    assert subs["alertmanager"].url == "http://alertmanager:9093"


def test_rule_defaults_and_duration_normalisation() -> None:
    (rule,) = parse_rules({"rules": [{"name": "r", "rate_above": 0.5, "window": "300s", "for": 90}]})
    assert (rule.window, rule.for_seconds, rule.require, rule.min_volume) == ("5m", 90.0, "all", 20)
    assert (rule.repeat_interval, rule.cooldown, rule.severity, rule.topics) == (3600.0, 0.0, "warning", None)


def rule_error(item: dict[str, Any], *extra: dict[str, Any]) -> str:
    with pytest.raises(RulesError) as info:
        parse_rules({"rules": [item, *extra]}, "rules.yaml")
    return str(info.value)


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        (
            {"name": "fed-surge", "rate_above": 0.5, "window": "abc"},
            "rules.yaml: rule 'fed-surge': field 'window': invalid duration 'abc'",
        ),
        (
            {"name": "r", "surge_above": 2, "window": "90.5s"},
            "rule 'r': field 'window': must be whole seconds",
        ),
        ({"name": "r"}, "rule 'r': field 'rate_above': a rule needs rate_above, surge_above or both"),
        # A typo never matched any window (the rule never fired); Alertmanager refused the annotation.
        (
            {"name": "r", "rate_above": 0.5, "topics": ["Energy|Oil"]},
            "rule 'r': field 'topics': unknown topic 'Energy|Oil' (did you mean 'Energy | Oil'?)",
        ),
        (
            {"name": "r", "rate_above": 0.5, "annotations": {"runbook-url": "x"}},
            "rule 'r': field 'annotations.runbook-url': not a valid annotation name",
        ),
        ({"name": "r", "rate_above": 1.5}, "rule 'r': field 'rate_above': 1.5 is outside"),
        ({"name": "r", "rate_above": True}, "rule 'r': field 'rate_above': expected a finite number"),
        ({"name": "r", "surge_above": ".nan"}, "field 'surge_above': expected a finite number"),
        (
            {"name": "r", "rate_above": 0.5, "severity": "page"},
            "rule 'r': field 'severity': 'page' is not one of info, warning, critical",
        ),
        (
            {"name": "r", "rate_above": 0.5, "require": "both"},
            "field 'require': 'both' is not one of all, any",
        ),
        ({"name": "r", "rate_above": 0.5, "min_volume": -1}, "field 'min_volume': must be at least 0"),
        ({"name": "r", "rate_above": 0.5, "for": "-5m"}, "field 'for': invalid duration '-5m'"),
        ({"name": "r", "rate_above": 0.5, "repeat_interval": 0}, "field 'repeat_interval': must be positive"),
        ({"name": "r", "rate_above": 0.5, "topic": ["Macro"]}, "rule 'r': field 'topic': unknown field"),
        ({"name": "r", "rate_above": 0.5, "topics": "Macro"}, "field 'topics': expected a non-empty list"),
        (
            {"name": "r", "rate_above": 0.5, "topics": ["Macro", "Macro"]},
            "field 'topics': contains duplicates",
        ),
        (
            {"name": "r", "rate_above": 0.5, "labels": {"severity": "x"}},
            "field 'labels.severity': reserved label",
        ),
        (
            {"name": "r", "rate_above": 0.5, "labels": {"bad-name": "x"}},
            "field 'labels.bad-name': not a valid label name",
        ),
        (
            {"name": "r", "rate_above": 0.5, "labels": {"team": 3}},
            "field 'labels': key 'team': keys and values must be strings",
        ),
        (
            {"name": "r", "rate_above": 0.5, "annotations": {"s": "{nope}"}},
            "field 'annotations.s': unknown placeholder 'nope'",
        ),
        (
            {"name": "r", "rate_above": 0.5, "annotations": {"s": "{rate"}},
            "field 'annotations.s': invalid template",
        ),
        # Accepted before, then every evaluation of the firing alert raised: stuck firing, nothing sent.
        (
            {"name": "r", "rate_above": 0.5, "annotations": {"s": "{rate:{severity}}"}},
            "field 'annotations.s': invalid template",
        ),
        (
            {"name": "r", "rate_above": 0.5, "annotations": {"s": "{volume:d}"}},  # every value is a string
            "field 'annotations.s': invalid template",
        ),
        (
            {"name": "r", "rate_above": 0.5, "annotations": {"s": "{rate:>100000000}"}},
            "field 'annotations.s': template '{rate:>100000000}'... expands to over 4096 characters",
        ),
        ({"rate_above": 0.5}, "rules.yaml: rule #1: field 'name': required"),
        ("just a string", "rules.yaml: rule #1: expected a mapping"),
    ],
)
def test_invalid_rules_name_rule_and_field(item: dict[str, Any], expected: str) -> None:
    assert expected in rule_error(item)


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("surge_above", "expected a finite number, got 1000000000"),
        ("rate_above", "expected a finite number"),
        ("window", "must be at most 365d, got 1000000000"),
        ("for", "must be at most 365d"),
        ("cooldown", "must be at most 365d"),
        ("repeat_interval", "must be at most 365d"),
    ],
)
def test_a_huge_yaml_integer_names_the_field(field: str, expected: str) -> None:
    message = rule_error({"name": "r", "surge_above": 1.0, field: 10**400})
    assert message.startswith(f"rules.yaml: rule 'r': field '{field}': {expected}")
    assert len(message) < 150  # the 401 digits are elided


def test_rule_durations_are_bounded() -> None:
    (rule,) = parse_rules({"rules": [{"name": "r", "rate_above": 0.5, "cooldown": "365d"}]})
    assert rule.cooldown == 365 * 86400
    assert "field 'for': must be at most 365d, got '1e300'" in rule_error(
        {"name": "r", "rate_above": 0.5, "for": "1e300"}
    )


def test_duplicate_rule_names_are_rejected() -> None:
    message = rule_error({"name": "r", "rate_above": 0.5}, {"name": "r", "surge_above": 3})
    assert message == "rules.yaml: rule 'r': field 'name': duplicate rule name"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rules: {}\n", "'rules' must be a list"),
        ("- name: r\n", "expected a mapping with a top-level 'rules' list"),
        ("rules: []\nrule: []\n", "unknown top-level key(s) 'rule'"),
        ("rules: [\n", "invalid YAML"),
    ],
)
def test_invalid_rules_files_name_the_file(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, "rules.yaml", text)
    with pytest.raises(RulesError) as info:
        load_rules(path)
    assert str(info.value).startswith(str(path)) and expected in str(info.value)


def test_missing_rules_file_is_a_rules_error(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(tmp_path / "absent.yaml")


def test_check_windows_names_the_rule() -> None:
    rules = parse_rules({"rules": [{"name": "slow", "rate_above": 0.5, "window": "2h"}]})
    with pytest.raises(RulesError, match="rule 'slow': field 'window': the monitor keeps no '2h' window"):
        check_windows(rules, ["5m", "15m", "1h"])


@given(st.integers(1, 7 * 86400))
def test_windows_normalise_to_the_monitor_labels(seconds: int) -> None:
    (by_seconds,) = parse_rules({"rules": [{"name": "r", "rate_above": 0.1, "window": seconds}]})
    (by_label,) = parse_rules({"rules": [{"name": "r", "rate_above": 0.1, "window": by_seconds.window}]})
    assert by_label.window == by_seconds.window


def test_loaded_rule_drives_the_engine(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "rules.yaml",
        yaml.safe_dump({"rules": [{"name": "r", "rate_above": 0.5, "window": "5m", "min_volume": 1}]}),
    )
    engine = AlertEngine(load_rules(path))
    snapshot = WindowSnapshot("Macro", "5m", 300, 0.0, 10, 8, 0.8, 0.7, None, None, None, ())
    assert [e.status for e in engine.evaluate([snapshot], 0.0)] == ["firing"]


# --- subscriptions ---------------------------------------------------------------------------------


def sub_error(item: dict[str, Any], *extra: dict[str, Any]) -> str:
    with pytest.raises(SubscriptionsError) as info:
        parse_subscriptions({"subscriptions": [item, *extra]}, "subscriptions.yaml")
    return str(info.value)


HOOK = {"name": "hook", "kind": "webhook", "url": "http://127.0.0.1:9/x", "secret": "k"}


def test_subscription_defaults() -> None:
    (sub,) = parse_subscriptions({"subscriptions": [HOOK]})
    assert (sub.timeout_s, sub.max_attempts, sub.max_age_s) == (5.0, 0, 86400.0)
    assert (sub.backoff_initial_s, sub.backoff_max_s, sub.send_resolved) == (1.0, 300.0, True)


def test_secret_env_is_read_at_load_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_SECRET", "from-env")
    item = {**HOOK, "secret_env": "HOOK_SECRET"}
    del item["secret"]
    (sub,) = parse_subscriptions({"subscriptions": [item]})
    assert sub.secret == "from-env"
    monkeypatch.delenv("HOOK_SECRET")
    assert (
        "subscription 'hook': field 'secret_env': environment variable HOOK_SECRET is not set"
        in sub_error(item)
    )


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ({**HOOK, "url": "ftp://x"}, "subscription 'hook': field 'url': expected an http(s) URL"),
        (
            {**HOOK, "topics": ["Macro", "macro"]},
            "field 'topics': unknown topic 'macro' (did you mean 'Macro'?)",
        ),
        (
            {"name": "am", "kind": "alertmanager", "url": "http://am:9093/api/v2/alerts"},
            "field 'url': give Alertmanager's base URL (http://am:9093); finsent adds /api/v2/alerts",
        ),
        (
            {"name": "am", "kind": "alertmanager", "url": "http://am:9093/api/v2"},
            "field 'url': give Alertmanager's base URL (http://am:9093); finsent adds /api/v2/alerts",
        ),
        # urlsplit sees no query in a bare "?": the pushes went to /?/api/v2/alerts.
        ({"name": "am", "kind": "alertmanager", "url": "http://am:9093/?"}, "a base URL takes no query"),
        ({"name": "am", "kind": "alertmanager", "url": "http://am:9093#"}, "a base URL takes no query"),
        ({**HOOK, "secret": "ab\ud800"}, "field 'secret': holds a lone UTF-16 surrogate"),
        (
            {k: v for k, v in HOOK.items() if k != "secret"},
            "field 'secret': a webhook needs exactly one of secret or secret_env",
        ),
        ({**HOOK, "secret_env": "X"}, "field 'secret': a webhook needs exactly one of"),
        (
            {**HOOK, "kind": "email"},
            "subscription 'hook': field 'kind': 'email' is not one of webhook, kafka, alertmanager",
        ),
        ({**HOOK, "topic": "alerts"}, "subscription 'hook': field 'topic': unknown field"),
        ({**HOOK, "min_severity": "loud"}, "field 'min_severity': 'loud' is not one of"),
        ({**HOOK, "severities": ["critical", "page"]}, "field 'severities': 'page' is not one of"),
        (
            {**HOOK, "min_severity": "info", "severities": ["info"]},
            "field 'severities': give min_severity or severities, not both",
        ),
        ({**HOOK, "timeout": "soon"}, "field 'timeout': invalid duration 'soon'"),
        ({**HOOK, "max_attempts": 1.5}, "field 'max_attempts': expected an integer"),
        (
            {**HOOK, "backoff_initial": "10s", "backoff_max": "5s"},
            "field 'backoff_max': must be at least backoff_initial",
        ),
        ({**HOOK, "send_resolved": "yes please"}, "field 'send_resolved': expected true or false"),
        ({"name": "am", "kind": "alertmanager"}, "subscription 'am': field 'url': required"),
        ({"kind": "kafka"}, "subscriptions.yaml: subscription #1: field 'name': required"),
    ],
)
def test_invalid_subscriptions_name_subscription_and_field(item: dict[str, Any], expected: str) -> None:
    message = sub_error(item)
    assert message.startswith("subscriptions.yaml: ") and expected in message


AM = {"name": "am", "kind": "alertmanager", "url": "http://alertmanager:9093"}
KAFKA = {"name": "k", "kind": "kafka"}


@pytest.mark.parametrize(
    ("item", "field", "largest"),
    [
        (HOOK, "timeout", "5m"),
        (HOOK, "max_age", "30d"),
        ({**HOOK, "backoff_max": "24h"}, "backoff_initial", "24h"),
        (HOOK, "backoff_max", "24h"),
        (AM, "ttl", "30d"),
        (KAFKA, "timeout", "5m"),
    ],
)
def test_subscription_durations_are_bounded(item: dict[str, Any], field: str, largest: str) -> None:
    parse_subscriptions({"subscriptions": [{**item, field: largest}]})
    for too_much in ("1e300", 10**400, f"{largest}1s"):
        message = sub_error({**item, field: too_much})
        assert f"field '{field}': must be at most {largest}, got " in message and len(message) < 150


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:70000/h",
        "http://127.0.0.1:abc/h",
        "http://127.0.0.1:0/h",
        "http://host:/h",
        "http://@/h",
        "http://user:pw@host/h",
        "http://[::1/h",
        "http://[zz]/h",
        "http://exa mple.com/h",
        "http://example.com/h\n",
        "http://café.example/h",
        "http:///h",
        "mailto:x@example.com",
    ],
)
def test_unusable_urls_are_refused_at_load(url: str) -> None:
    for item in ({**HOOK, "url": url}, {**AM, "url": url}):
        message = sub_error(item)
        assert f"subscription '{item['name']}': field 'url': " in message and "\n" not in message


def test_alertmanager_base_urls_take_no_query() -> None:
    assert "field 'url': a base URL takes no query or fragment" in sub_error({**AM, "url": "http://am/?x=1"})


@pytest.mark.parametrize(
    "url",
    [
        "https://risk.example.com/hooks/finsent?team=rates",
        "http://[::1]:8080/h",
        "http://h:65535",
        "HTTP://h:1/",
    ],
)
def test_usable_urls_load(url: str) -> None:
    (sub,) = parse_subscriptions({"subscriptions": [{**HOOK, "url": url}]})
    assert sub.url == url


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("bad topic!", "is not a Kafka topic name"),
        ("a" * 250, "is not a Kafka topic name"),
        (".", "is not a Kafka topic name"),
        ("..", "is not a Kafka topic name"),
        ("alerts/ops", "is not a Kafka topic name"),
        ("news.scored", "'news.scored' is one of finsent's own topics"),
        ("news.raw", "one of finsent's own topics"),
        ("news.dlq", "one of finsent's own topics"),
        ("news.windows", "one of finsent's own topics"),
        ("news.labels", "one of finsent's own topics"),
    ],
)
def test_kafka_topics_are_checked(topic: str, expected: str) -> None:
    message = sub_error({**KAFKA, "topic": topic})
    assert "subscription 'k': field 'topic': " in message and expected in message and len(message) < 200


def test_kafka_topics_may_be_any_other_valid_name() -> None:
    for topic in ("a" * 249, "alerts.finsent_v2-prod", "..a"):
        (sub,) = parse_subscriptions({"subscriptions": [{**KAFKA, "topic": topic}]})
        assert sub.topic == topic


def test_the_services_own_topic_names_can_be_reserved(tmp_path: Path) -> None:
    path = write(tmp_path, "subs.yaml", "subscriptions: [{name: k, kind: kafka, topic: scored}]\n")
    assert load_subscriptions(path)[0].topic == "scored"
    with pytest.raises(SubscriptionsError, match="field 'topic': 'scored' is one of finsent's own topics"):
        load_subscriptions(path, pipeline_topics=["raw", "scored"])


def test_duplicate_subscription_names_are_rejected() -> None:
    assert "subscription 'hook': field 'name': duplicate" in sub_error(
        HOOK, {"name": "hook", "kind": "kafka"}
    )


def test_subscription_file_errors_name_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "subs.yaml", "subscriptions:\n  - name: k\n    kind: kafka\n    bogus: 1\n")
    with pytest.raises(
        SubscriptionsError, match=r"subs\.yaml: subscription 'k': field 'bogus': unknown field"
    ):
        load_subscriptions(path)


def test_subscription_filters() -> None:
    firing = AlertEngine([rule(severity="warning")]).evaluate([snap("Macro")], 0)[0]
    engine = AlertEngine([rule(severity="critical")])
    critical = engine.evaluate([snap("Macro")], 0)[0]
    resolved = engine.evaluate([snap("Macro", rate=0.1)], 1)[0]
    assert resolved.status == "resolved"
    everything = Subscription("all", "kafka")
    assert everything.matches(firing) and everything.matches(resolved)
    assert not Subscription("t", "kafka", topics=("Energy | Oil",)).matches(firing)
    assert Subscription("t", "kafka", topics=("Macro",)).matches(firing)
    at_least_critical = Subscription("c", "kafka", min_severity="critical")
    assert at_least_critical.matches(critical) and not at_least_critical.matches(firing)
    assert Subscription("w", "kafka", min_severity="warning").matches(critical)
    exactly_warning = Subscription("e", "kafka", severities=("warning",))
    assert exactly_warning.matches(firing) and not exactly_warning.matches(critical)
    assert not Subscription("q", "kafka", send_resolved=False).matches(resolved)


def test_rule_objects_compare_by_value() -> None:
    a = parse_rules({"rules": [{"name": "r", "rate_above": 0.5, "labels": {"a": "b"}}]})
    b = parse_rules({"rules": [{"name": "r", "rate_above": 0.5, "labels": {"a": "b"}}]})
    assert a == b and isinstance(a[0], Rule)
