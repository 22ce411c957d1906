"""Per-topic negative-sentiment monitor: event-time windows, dedupe, baselines and surge statistics.

The core is pure (no broker, no HTTP): feed it scored messages with ``Monitor.observe`` and read
``Monitor.snapshot``. Prometheus export lives in ``monitor.metrics``.
"""

from monitor.checkpoint import load_checkpoint, remove_stale_temp_files, save_checkpoint
from monitor.config import OTHER_TOPIC, MonitorConfig, parse_duration, window_label
from monitor.core import Monitor, MonitorCounters, Observation, Outcome
from monitor.snapshot import Headline, WindowSnapshot
from monitor.stats import (
    BaselineEstimate,
    EwmaMeanVar,
    MeanVar,
    RateBaseline,
    RunningMeanVar,
    Statistic,
    binomial_surge,
    wilson_lower_bound,
)

__all__ = [
    "OTHER_TOPIC",
    "BaselineEstimate",
    "EwmaMeanVar",
    "Headline",
    "MeanVar",
    "Monitor",
    "MonitorConfig",
    "MonitorCounters",
    "Observation",
    "Outcome",
    "RateBaseline",
    "RunningMeanVar",
    "Statistic",
    "WindowSnapshot",
    "binomial_surge",
    "load_checkpoint",
    "parse_duration",
    "remove_stale_temp_files",
    "save_checkpoint",
    "wilson_lower_bound",
    "window_label",
]
