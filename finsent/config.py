"""Service configuration: flags > YAML file (--config) > FINSENT_* environment > defaults, validated at start."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from finsent.errors import UsageError, check_folder_path
from finsent.options import Option, add_option_flags, merge_settings
from ingest import (
    DEFAULT_MAX_MESSAGE_BYTES,
    KafkaSettings,
    LoopSettings,
    bootstrap_server_problem,
    topic_name_problem,
)
from model import DEFAULT_MODEL_DIR, TOPIC_LABELS
from model.drift import JS_MAX
from monitor import MonitorConfig, parse_duration

CONFIG_ENV = "FINSENT_CONFIG"
STAGES = ("all", "classify", "monitor", "alerts")

OPTIONS: tuple[Option, ...] = (
    Option("bootstrap_servers", str, "127.0.0.1:9092", "Kafka bootstrap servers, comma-separated host:port"),
    Option("group_id", str, "finsent", "consumer group id"),
    Option("client_id", str, "finsent", "Kafka client id"),
    Option("input_topic", str, "news.raw", "topic to read news from"),
    Option("output_topic", str, "news.scored", "topic to write scored news to (keyed by topic label)"),
    Option("dlq_topic", str, "news.dlq", "dead-letter topic for invalid input"),
    Option("metrics_host", str, "0.0.0.0", "address of the /metrics, /healthz, /readyz server"),
    Option(
        "metrics_port", int, 9464, "port of the metrics server (0: any free port)", minimum=0, maximum=65535
    ),
    Option("max_batch", int, 64, "flush a micro-batch at this many messages", minimum=1, maximum=4096),
    Option("max_wait_ms", int, 50, "... or this long after its oldest message", minimum=0, maximum=60_000),
    Option("max_buffer", int, 256, "pause fetching when this many messages wait", minimum=1, maximum=100_000),
    Option(
        "max_message_bytes",
        int,
        DEFAULT_MAX_MESSAGE_BYTES,
        "larger payloads go to the DLQ as oversized",
        minimum=1,
        maximum=16 * 1024 * 1024,
    ),
    Option("auto_offset_reset", str, "earliest", "where a new group starts", choices=("earliest", "latest")),
    # --model: the same spelling as `finsent classify`.
    Option("model_dir", Path, DEFAULT_MODEL_DIR, "model directory", aliases=("--model",)),
    Option("variant", str, "auto", "ONNX variant", choices=("auto", "int8", "fp32", "fp16")),
    Option("device", str, "auto", "where to run the model", choices=("auto", "cpu", "cuda")),
    Option("threads", int, 0, "ONNX Runtime intra-op threads (0: all cores)", minimum=0, maximum=256),
    Option(
        "max_tokens",
        int,
        None,
        "token budget per text: a longer text is scored on its first tokens (at most the graph's positions)",
        minimum=8,
        shown_default="the model's, 128",
    ),
    Option(
        "security_protocol",
        str,
        "PLAINTEXT",
        "Kafka security protocol",
        choices=("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
    ),
    Option(
        "sasl_mechanism",
        str,
        None,
        "SASL mechanism",
        choices=("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"),
    ),
    Option("sasl_username", str, None, "SASL username"),
    Option("sasl_password", str, None, "SASL password (prefer the environment variable)", secret=True),
    Option("ssl_cafile", Path, None, "CA bundle for TLS"),
    Option("ssl_certfile", Path, None, "client certificate for TLS"),
    Option("ssl_keyfile", Path, None, "client key for TLS"),
    Option("ssl_check_hostname", bool, True, "verify the broker's TLS hostname"),
    Option("session_timeout_ms", int, 10_000, "group session timeout", minimum=1000, maximum=3_600_000),
    Option("heartbeat_interval_ms", int, 3_000, "group heartbeat interval", minimum=100, maximum=3_600_000),
    Option("max_poll_interval_ms", int, 300_000, "max time between polls", minimum=1000, maximum=86_400_000),
    Option("request_timeout_ms", int, 30_000, "Kafka request timeout", minimum=1000, maximum=3_600_000),
    Option("log_level", str, "INFO", "log level", choices=("DEBUG", "INFO", "WARNING", "ERROR")),
    # Stages, monitor and alerts (durations: seconds or e.g. "500ms", "5s", "2m").
    Option(
        "stage",
        str,
        "all",
        "which stage this process runs (all: classify + monitor + alerts in one process)",
        choices=STAGES,
    ),
    Option("rules", Path, None, "alert rules YAML (none: the alerts stage evaluates no rules)"),
    Option("subscriptions", Path, None, "alert subscriptions YAML (where alerts are delivered)"),
    Option("state_dir", Path, Path("finsent-state"), "monitor checkpoint and alert database directory"),
    Option("windows_topic", str, "news.windows", "topic the monitor stage writes window snapshots to"),
    Option(
        "eval_interval",
        float,
        5.0,
        "seconds between monitor evaluations (snapshots, metrics, alerts)",
        duration=True,
        above=0,
    ),
    Option("checkpoint_interval", float, 10.0, "seconds between monitor checkpoints", duration=True, above=0),
    Option("windows", str, "5m,15m,1h", "monitor window horizons, comma-separated durations"),
    Option("bucket_seconds", int, 10, "monitor bucket width in seconds", minimum=1, maximum=86_400),
    Option("allowed_lateness", float, 120.0, "event-time lateness the monitor still accepts", duration=True),
    Option("min_volume", int, 20, "windows below this volume get no surge statistic", minimum=1),
    Option(
        "baseline_half_life",
        float,
        6 * 3600.0,
        "half-life of the negative-rate baseline",
        duration=True,
        above=0,
    ),
    Option("baseline_min_samples", int, 30, "baseline samples before surges are scored", minimum=1),
    # Model registry, hot swap and drift (README.md).
    Option(
        "registry",
        Path,
        None,
        "model registry folder: serve its current version, hot-swap on promote/rollback (none: model_dir)",
    ),
    Option(
        "swap_poll_interval",
        float,
        5.0,
        "seconds between checks of the registry's current version",
        duration=True,
        above=0,
        maximum=86400.0,
    ),
    Option(
        "drift_window", int, 1000, "predictions in the rolling drift window", minimum=10, maximum=1_000_000
    ),
    Option(
        "low_confidence_threshold",
        float,
        0.5,
        "top probability below this counts as low-confidence",
        minimum=0,
        maximum=1,
    ),
    Option(
        "drift_retrain_threshold",
        float,
        None,
        "write a retrain request to the registry when a task's prediction drift (JS divergence) passes this",
        above=0,
        maximum=JS_MAX,
    ),
    Option(
        "drift_request_cooldown",
        float,
        6 * 3600.0,
        "least time between two retrain requests while the same model version serves",
        duration=True,
    ),
)
OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}


@dataclass(frozen=True)
class ServiceConfig:
    """Validated settings of `finsent run`."""

    bootstrap_servers: str
    group_id: str
    client_id: str
    input_topic: str
    output_topic: str
    dlq_topic: str
    metrics_host: str
    metrics_port: int
    max_batch: int
    max_wait_ms: int
    max_buffer: int
    max_message_bytes: int
    auto_offset_reset: str
    model_dir: Path
    variant: str
    device: str
    threads: int
    max_tokens: int | None
    security_protocol: str
    sasl_mechanism: str | None
    sasl_username: str | None
    sasl_password: str | None
    ssl_cafile: Path | None
    ssl_certfile: Path | None
    ssl_keyfile: Path | None
    ssl_check_hostname: bool
    session_timeout_ms: int
    heartbeat_interval_ms: int
    max_poll_interval_ms: int
    request_timeout_ms: int
    log_level: str
    stage: str
    rules: Path | None
    subscriptions: Path | None
    state_dir: Path
    windows_topic: str
    eval_interval: float
    checkpoint_interval: float
    windows: str
    bucket_seconds: int
    allowed_lateness: float
    min_volume: int
    baseline_half_life: float
    baseline_min_samples: int
    registry: Path | None
    swap_poll_interval: float
    drift_window: int
    low_confidence_threshold: float
    drift_retrain_threshold: float | None
    drift_request_cooldown: float

    def monitor_config(self) -> MonitorConfig:
        """The monitor core's settings; UsageError naming the field when they do not fit together."""
        try:
            horizons = tuple(int(parse_duration(part)) for part in self.windows.split(",") if part.strip())
        except ValueError as error:
            raise UsageError(f"windows: {error}") from None
        try:
            return MonitorConfig(
                horizons=horizons,
                # The model's labels: a label no model emits (another producer's) is counted as
                # `other`, so it cannot take one of the capped per-topic series from a real topic.
                topics=TOPIC_LABELS,
                bucket_seconds=self.bucket_seconds,
                allowed_lateness=self.allowed_lateness,
                min_volume=self.min_volume,
                baseline_half_life=self.baseline_half_life,
                baseline_min_samples=self.baseline_min_samples,
            )
        except ValueError as error:
            raise UsageError(f"windows/bucket_seconds/monitor settings: {error}") from None

    def kafka_settings(self) -> KafkaSettings:
        """Client settings for ingest."""
        return KafkaSettings(
            bootstrap_servers=self.bootstrap_servers,
            group_id=self.group_id,
            client_id=self.client_id,
            security_protocol=self.security_protocol,
            sasl_mechanism=self.sasl_mechanism,
            sasl_username=self.sasl_username,
            sasl_password=self.sasl_password,
            ssl_cafile=None if self.ssl_cafile is None else str(self.ssl_cafile),
            ssl_certfile=None if self.ssl_certfile is None else str(self.ssl_certfile),
            ssl_keyfile=None if self.ssl_keyfile is None else str(self.ssl_keyfile),
            ssl_check_hostname=self.ssl_check_hostname,
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
            max_poll_interval_ms=self.max_poll_interval_ms,
            request_timeout_ms=self.request_timeout_ms,
            auto_offset_reset=self.auto_offset_reset,
        )

    def loop_settings(self, model_version: str) -> LoopSettings:
        """Topic, batching and limit settings for ingest."""
        return LoopSettings(
            input_topic=self.input_topic,
            output_topic=self.output_topic,
            dlq_topic=self.dlq_topic,
            max_batch=self.max_batch,
            max_wait_ms=self.max_wait_ms,
            max_buffer=self.max_buffer,
            max_message_bytes=self.max_message_bytes,
            model_version=model_version,
        )

    def redacted(self) -> dict[str, Any]:
        """Every setting, secrets masked, for logging."""
        values = {item.name: getattr(self, item.name) for item in fields(self)}
        for option in OPTIONS:
            if option.secret and values[option.name] is not None:
                values[option.name] = "***"
        return {name: str(value) if isinstance(value, Path) else value for name, value in values.items()}


def _check_combinations(config: ServiceConfig) -> None:
    """Checks that involve more than one setting, or a file a setting names."""
    _check_kafka(config)
    _check_monitoring(config)
    for name in ("rules", "subscriptions"):
        path = getattr(config, name)
        if path is not None and not path.is_file():
            raise UsageError(f"{name}: no such file {path}")
    for name in ("state_dir", "registry"):
        if getattr(config, name) is not None:
            check_folder_path(getattr(config, name), f"{name}:")


def check_bootstrap_servers(servers: str) -> None:
    """UsageError naming the first of the comma-separated host:port addresses that is not one."""
    for server in servers.split(","):
        problem = bootstrap_server_problem(server.strip())
        if problem is not None:
            raise UsageError(f"bootstrap_servers: {problem}")


def check_topic_name(field: str, name: str) -> None:
    """UsageError naming ``field`` when ``name`` is not a legal Kafka topic name."""
    problem = topic_name_problem(name)
    if problem is not None:
        raise UsageError(f"{field}: {problem}")


def _check_client(settings: KafkaSettings) -> None:
    """The Kafka client settings: broker addresses, SASL, TLS files."""
    check_bootstrap_servers(settings.bootstrap_servers)
    if settings.security_protocol.startswith("SASL") and settings.sasl_mechanism is None:
        raise UsageError(f"sasl_mechanism is required with security_protocol {settings.security_protocol}")
    if settings.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and (
        settings.sasl_username is None or settings.sasl_password is None
    ):
        raise UsageError(
            f"sasl_username and sasl_password are required for sasl_mechanism {settings.sasl_mechanism}"
        )
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path = getattr(settings, name)
        if path is not None and not Path(path).is_file():
            raise UsageError(f"{name}: no such file {path}")


def _check_kafka(config: ServiceConfig) -> None:
    _check_client(config.kafka_settings())
    for name in ("input_topic", "output_topic", "dlq_topic", "windows_topic"):
        check_topic_name(name, getattr(config, name))
    if config.max_buffer < config.max_batch:
        raise UsageError(f"max_buffer ({config.max_buffer}) must be at least max_batch ({config.max_batch})")
    if config.heartbeat_interval_ms >= config.session_timeout_ms:
        raise UsageError(
            f"heartbeat_interval_ms ({config.heartbeat_interval_ms}) must be below "
            f"session_timeout_ms ({config.session_timeout_ms})"
        )
    if len({config.input_topic, config.output_topic, config.dlq_topic}) < 3:
        raise UsageError("input_topic, output_topic and dlq_topic must be three different topics")
    if len({config.input_topic, config.output_topic, config.dlq_topic, config.windows_topic}) < 4:
        raise UsageError("windows_topic must differ from input_topic, output_topic and dlq_topic")


def _check_monitoring(config: ServiceConfig) -> None:
    if config.drift_retrain_threshold is not None and config.registry is None:
        raise UsageError("drift_retrain_threshold needs registry (the retrain request is written there)")
    config.monitor_config()


def _config_file(config_file: Path | None, environ: Mapping[str, str]) -> tuple[Path | None, str]:
    """The settings file (--config, else $FINSENT_CONFIG) and what named it, for messages."""
    if config_file is None and environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV]), CONFIG_ENV
    return config_file, "--config"


def load_config(
    flags: Mapping[str, Any], config_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> ServiceConfig:
    """Merge the sources (flags > file > environment > defaults) and validate; errors name the field."""
    environ = os.environ if environ is None else environ
    config_file, named_by = _config_file(config_file, environ)
    config = ServiceConfig(**merge_settings(OPTIONS, flags, config_file, environ, named_by))
    _check_combinations(config)
    return config


CLIENT_OPTIONS = tuple(
    option
    for option in OPTIONS
    if option.name
    in {
        "bootstrap_servers",
        "client_id",
        "security_protocol",
        "sasl_mechanism",
        "sasl_username",
        "sasl_password",
        "ssl_cafile",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_check_hostname",
        "request_timeout_ms",
    }
)


def load_client_settings(
    flags: Mapping[str, Any], config_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> KafkaSettings:
    """Only the Kafka client settings, from the same sources as :func:`load_config`, validated.

    For a command that only produces (`finsent produce`): the service's other settings, valid or not,
    play no part, though the file may hold them.
    """
    environ = os.environ if environ is None else environ
    config_file, named_by = _config_file(config_file, environ)
    everything = (option.name for option in OPTIONS)
    values = merge_settings(CLIENT_OPTIONS, flags, config_file, environ, named_by, file_may_hold=everything)
    client: dict[str, Any] = {name: str(v) if isinstance(v, Path) else v for name, v in values.items()}
    settings = KafkaSettings(**client)
    _check_client(settings)
    return settings


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--config plus one flag per setting; an absent flag leaves the setting to the file, env or default."""
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"YAML file of settings (also {CONFIG_ENV}); flags override it",
    )
    add_option_flags(parser, OPTIONS)


def config_from_args(args: argparse.Namespace) -> ServiceConfig:
    """The validated configuration for parsed arguments of a command that used add_config_arguments."""
    flags = {option.name: getattr(args, option.name, None) for option in OPTIONS}
    return load_config(flags, args.config)
