"""The service's label series exist at 0 from the start, so rate() and increase() see the first event."""

from __future__ import annotations

from finsent.metrics import ClassifyMetrics
from ingest import InvalidReason


def test_every_dead_letter_reason_is_exported_at_zero_before_the_first_one() -> None:
    metrics = ClassifyMetrics()
    for reason in InvalidReason:
        value = metrics.registry.get_sample_value("finsent_messages_invalid_total", {"reason": reason.value})
        assert value == 0.0, reason


def test_every_stream_error_kind_is_exported_at_zero_before_the_first_one() -> None:
    from ingest.observer import STREAM_ERROR_KINDS  # the kinds the loop reports

    metrics = ClassifyMetrics()
    assert set(STREAM_ERROR_KINDS) >= {"connect", "produce", "broker", "commit"}
    for kind in STREAM_ERROR_KINDS:
        assert (
            metrics.registry.get_sample_value(
                "finsent_stream_errors_total", {"stage": "classify", "kind": kind}
            )
            == 0.0
        ), kind


def test_declared_series_still_count() -> None:
    metrics = ClassifyMetrics()
    metrics.invalid(InvalidReason.NOT_JSON.value)
    metrics.error("commit")
    assert metrics.registry.get_sample_value("finsent_messages_invalid_total", {"reason": "not_json"}) == 1.0
    assert (
        metrics.registry.get_sample_value(
            "finsent_stream_errors_total", {"stage": "classify", "kind": "commit"}
        )
        == 1.0
    )
