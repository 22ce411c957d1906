"""Monitor configuration: durations, window labels and validation."""

import pytest

from monitor import MonitorConfig, parse_duration, window_label


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("2d", 172800.0),
        ("250ms", 0.25),
        ("12", 12.0),
        (7, 7.0),
    ],
)
def test_durations_parse(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5 minutes", "m5", "-3s", "1h-5m", "nan"])
def test_bad_durations_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_window_labels() -> None:
    assert [window_label(s) for s in (45, 300, 900, 3600, 5400, 7200)] == [
        "45s",
        "5m",
        "15m",
        "1h",
        "90m",
        "2h",
    ]


def test_defaults_derive_retention_and_reference_window() -> None:
    config = MonitorConfig()
    assert config.horizons == (300, 900, 3600)
    assert config.dedupe_seconds == 3600 + config.allowed_lateness
    assert config.reference_horizon == 300


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"horizons": (305,)}, "multiple of bucket_seconds"),
        ({"horizons": ()}, "at least one"),
        ({"horizons": (60, 60)}, "distinct"),
        ({"baseline_window": 120}, "not one of horizons"),
        ({"allowed_lateness": -1.0}, "allowed_lateness"),
        ({"baseline_half_life": 0.0}, "baseline_half_life"),
        ({"dedupe_retention": 10.0}, "dedupe_retention"),
        # Per-topic lateness accepts messages up to the longest horizon plus lateness behind the stream.
        ({"dedupe_retention": 120.0}, "at least the longest horizon plus allowed_lateness"),
        ({"top_k": 0}, "top_k"),
        ({"topics": ("Macro", "other")}, "reserved"),
        ({"baseline_clip_z": 0.0}, "baseline_clip_z"),
    ],
)
def test_invalid_config_names_the_field(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MonitorConfig(**kwargs)  # type: ignore[arg-type]
