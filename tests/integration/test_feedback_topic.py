"""Analyst corrections from the real broker's `news.labels`: validated, persisted, then committed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finsent.broker import EmbeddedBroker
from finsent.labels_topic import drain_labels
from ingest import KafkaSettings
from model.feedback import FeedbackStore
from tests.integration.conftest import produce

pytestmark = pytest.mark.integration


def label(message_id: str, text: str, **labels: object) -> bytes:
    return json.dumps({"id": message_id, "text": text, **labels}).encode()


def test_labels_topic_is_drained_once_with_bad_rows_reported(broker: EmbeddedBroker, tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "feedback")
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap, group_id="finsent-fb")
    produce(
        broker.bootstrap,
        [
            label("a", "Fed raises rates by 50 bp", topic="Fed | Central Banks", sentiment="negative"),
            label("b", "Acme beats estimates", sentiment="positive"),
            b"not json",
            label("c", "No label here"),
            label("d", "Gold slips", topic="Weather"),
        ],
        topic="news.labels",
    )
    report = drain_labels(kafka, "news.labels", store, max_seconds=60)
    assert report.valid == 2
    assert dict(report.bad) == {"not_json": 1, "no_label": 1, "unknown_topic": 1}
    assert set(store.table()["id"]) == {"a", "b"}

    produce(
        broker.bootstrap, [label("a", "Fed raises rates by 50 bp", sentiment="neutral")], topic="news.labels"
    )
    again = drain_labels(kafka, "news.labels", store, max_seconds=60)
    assert again.valid == 1 and not again.bad, "committed offsets: only the new message is read"
    table = store.table().set_index("id")
    assert len(table) == 2 and table.loc["a", "sentiment"] == "neutral"
