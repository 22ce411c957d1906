"""The classify step: valid records waiting for the model, the batch in the worker thread, and a
classify call that one poison text cannot stop."""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ingest.contract import Invalid, InvalidReason, NewsItem
from ingest.dlq import Source
from ingest.offsets import Partition
from ingest.scored import Classifier, check_result

# The loop's logger: these lines were the loop's before it was split into modules.
log = logging.getLogger("ingest.loop")

# One answer per text: the classifier's result, or why that text could not be classified.
Results = list[Mapping[str, Any] | Invalid]


@dataclass
class Pending:
    """A valid record waiting to be classified, with what a dead letter for it must carry."""

    partition: Partition
    offset: int
    timestamp_ms: int | None
    item: NewsItem
    raw: bytes
    key: bytes | None = None

    def source(self) -> Source:
        """Where the record came from, for its dead letter."""
        return Source(
            self.partition.topic, self.partition.partition, self.offset, self.timestamp_ms, self.key
        )


@dataclass
class InFlight:
    """The batch in the worker thread; its future answers (results, seconds the model took)."""

    batch: list[Pending]
    future: concurrent.futures.Future[tuple[Results, float]]


def classify_safely(classify: Classifier, texts: list[str]) -> Results:
    """Classify a batch; if the batch fails, retry one by one so one poison text cannot stop the stream."""
    try:
        results = list(classify(texts))
        if len(results) != len(texts):
            raise ValueError(f"classifier returned {len(results)} results for {len(texts)} texts")
        for result in results:
            check_result(result)
        return list(results)
    except Exception:
        log.exception("batch of %d failed to classify; retrying one by one", len(texts))
    answers: Results = []
    for text in texts:
        try:
            (result,) = classify([text])
            check_result(result)
            answers.append(result)
        except Exception as error:
            answers.append(Invalid(InvalidReason.CLASSIFY_FAILED, f"{type(error).__name__}: {error}"[:300]))
    return answers


def start_classifying(
    executor: concurrent.futures.Executor, classify: Classifier, batch: list[Pending]
) -> InFlight:
    """Classify a batch in the executor's worker thread, timing the model."""
    texts = [pending.item.text for pending in batch]

    def work() -> tuple[Results, float]:
        started = time.perf_counter()
        results = classify_safely(classify, texts)
        return results, time.perf_counter() - started

    return InFlight(batch, executor.submit(work))
