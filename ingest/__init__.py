"""ingest: Kafka in, validated micro-batches to an injected classifier, scored and DLQ records out.

Imports none of finsent's other packages; the classifier and the metrics observer are injected.
"""

from ingest.batcher import MicroBatcher
from ingest.contract import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Invalid,
    InvalidReason,
    NewsItem,
    decode,
    loads_strict,
    parse_rfc3339,
    validate,
)
from ingest.dlq import Source, dlq_record
from ingest.kafka_config import (
    KafkaSettings,
    bootstrap_server_problem,
    common_config,
    consumer_config,
    producer_config,
    topic_name_problem,
)
from ingest.loop import LoopSettings, StreamLoop
from ingest.observer import NullObserver, Observer
from ingest.offsets import OffsetTracker, Partition
from ingest.scored import Classifier, scored_record

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "Classifier",
    "Invalid",
    "InvalidReason",
    "KafkaSettings",
    "LoopSettings",
    "MicroBatcher",
    "NewsItem",
    "NullObserver",
    "Observer",
    "OffsetTracker",
    "Partition",
    "Source",
    "StreamLoop",
    "bootstrap_server_problem",
    "common_config",
    "consumer_config",
    "decode",
    "dlq_record",
    "loads_strict",
    "parse_rfc3339",
    "producer_config",
    "scored_record",
    "topic_name_problem",
    "validate",
]
