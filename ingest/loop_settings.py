"""Settings of one stream loop: topics, batching, limits and waits."""

from __future__ import annotations

from dataclasses import dataclass

from ingest.contract import DEFAULT_MAX_MESSAGE_BYTES


@dataclass(frozen=True)
class LoopSettings:
    """Topics, batching and limits of one stream loop."""

    input_topic: str = "news.raw"
    output_topic: str = "news.scored"
    dlq_topic: str = "news.dlq"
    max_batch: int = 64
    max_wait_ms: int = 50
    max_buffer: int = 256
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    model_version: str = "unknown"
    flush_timeout_s: float = 60.0
    # Once a stop is requested, how long acknowledgements and the final commit may still take.
    shutdown_timeout_s: float = 10.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 15.0
