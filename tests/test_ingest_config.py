"""Service settings: flags > YAML file > FINSENT_* environment > defaults, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from finsent.classify_stage import load_engine
from finsent.cli import main
from finsent.config import OPTIONS, load_client_settings, load_config
from finsent.errors import UsageError
from model import DEFAULT_MODEL_DIR


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "finsent.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_when_nothing_is_set() -> None:
    config = load_config({}, None, environ={})
    assert config.bootstrap_servers == "127.0.0.1:9092"
    assert (config.input_topic, config.output_topic, config.dlq_topic) == (
        "news.raw",
        "news.scored",
        "news.dlq",
    )
    assert config.max_batch == 64 and config.max_wait_ms == 50
    assert config.model_dir == DEFAULT_MODEL_DIR
    assert config.security_protocol == "PLAINTEXT"


def test_flag_beats_file_beats_environment_beats_default(tmp_path: Path) -> None:
    config_file = write(tmp_path, "max_batch: 16\nmax_wait_ms: 20\ngroup_id: from-file\n")
    environ = {
        "FINSENT_MAX_BATCH": "8",
        "FINSENT_MAX_WAIT_MS": "10",
        "FINSENT_GROUP_ID": "from-env",
        "FINSENT_DLQ_TOPIC": "env.dlq",
    }
    config = load_config({"max_batch": "32", "max_wait_ms": None}, config_file, environ)
    assert config.max_batch == 32  # flag
    assert config.max_wait_ms == 20  # file (flag absent)
    assert config.group_id == "from-file"
    assert config.dlq_topic == "env.dlq"  # environment only
    assert config.output_topic == "news.scored"  # default


def test_config_file_can_come_from_the_environment(tmp_path: Path) -> None:
    config_file = write(tmp_path, "input-topic: wire.raw\n")
    config = load_config({}, None, {"FINSENT_CONFIG": str(config_file)})
    assert config.input_topic == "wire.raw"


def test_model_dir_from_environment() -> None:
    assert load_config({}, None, {"FINSENT_MODEL_DIR": "/tmp/m"}).model_dir == Path("/tmp/m")


def test_every_option_has_a_distinct_flag_and_env_name() -> None:
    assert len({option.flag for option in OPTIONS}) == len(OPTIONS)
    assert all(option.env.startswith("FINSENT_") for option in OPTIONS)


@pytest.mark.parametrize(
    ("flags", "environ", "message"),
    [
        ({"max_batch": "0"}, {}, "--max-batch: must be at least 1"),
        ({"max_batch": "many"}, {}, "--max-batch: expected an integer"),
        ({}, {"FINSENT_MAX_WAIT_MS": "-5"}, "FINSENT_MAX_WAIT_MS: must be at least 0"),
        ({}, {"FINSENT_METRICS_PORT": "70000"}, "FINSENT_METRICS_PORT: must be at most 65535"),
        ({"auto_offset_reset": "middle"}, {}, "--auto-offset-reset: must be one of earliest, latest"),
        ({}, {"FINSENT_SSL_CHECK_HOSTNAME": "maybe"}, "FINSENT_SSL_CHECK_HOSTNAME: expected true or false"),
        ({"max_batch": "128", "max_buffer": "64"}, {}, "max_buffer (64) must be at least max_batch (128)"),
        ({"output_topic": "news.raw"}, {}, "three different topics"),
        ({"security_protocol": "SASL_SSL"}, {}, "sasl_mechanism is required"),
        (
            {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"},
            {},
            "sasl_username and sasl_password",
        ),
        ({"ssl_cafile": "/no/such/ca.pem"}, {}, "ssl_cafile: no such file"),
        ({"bootstrap_servers": "  "}, {}, "--bootstrap-servers: must not be empty"),
        # Used to fail in the stage thread (a traceback) or retry forever, not at start.
        ({"bootstrap_servers": "127.0.0.1:abc"}, {}, "bootstrap_servers: '127.0.0.1:abc' is not host:port"),
        ({"bootstrap_servers": "127.0.0.1:70000"}, {}, "port in 1-65535"),
        ({"bootstrap_servers": "127.0.0.1:0"}, {}, "port in 1-65535"),
        ({"bootstrap_servers": "a:9092,"}, {}, "'' is not host:port"),
        ({"bootstrap_servers": "http://127.0.0.1:9092"}, {}, "is not host:port"),
        ({"bootstrap_servers": "[::1"}, {}, "is not [IPv6 address]:port"),
        ({"output_topic": "bad topic!"}, {}, "output_topic: 'bad topic!' is not a legal Kafka topic name"),
        ({"windows_topic": "w" * 250}, {}, "windows_topic:"),
        ({"dlq_topic": "."}, {}, "dlq_topic: '.' is not a legal"),
        ({}, {"FINSENT_STATE_DIR": __file__}, "is not a folder"),
        ({}, {"FINSENT_STATE_DIR": __file__ + "/sub"}, "is not a folder"),
        ({}, {"FINSENT_STATE_DIR": ""}, "FINSENT_STATE_DIR: must not be empty"),  # was the current folder
        ({"eval_interval": 10**400}, {}, "--eval-interval: 1" + "0" * 19 + "... is too large"),
        # `--rules "$RULES"` with RULES unset quietly turned alerting off.
        ({"rules": ""}, {}, "--rules: must not be empty (leave it out for none)"),
        ({"registry": " "}, {}, "--registry: must not be empty"),
        # Past threading's longest wait: the hot-swap watcher died with an OverflowError.
        ({"swap_poll_interval": "1e10"}, {}, "--swap-poll-interval: must be at most 86400"),
    ],
)
def test_bad_values_are_rejected_naming_the_field(
    flags: dict[str, str], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(UsageError, match=None) as caught:
        load_config(flags, None, environ)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_batch: [1, 2]\n", "max_batch: expected an integer"),
        ("max_bach: 3\n", "unknown setting 'max_bach'"),
        ("- a\n- b\n", "expected a mapping"),
        ("max_batch: : :\n", "invalid YAML at line 1"),
        ("ssl_check_hostname: 3\n", "ssl_check_hostname: expected true or false"),
        ("stage: null\n", "stage: must not be null"),  # used to run nothing and exit 0
        ("max_batch: null\n", "max_batch: must not be null"),
        ("bootstrap_servers: ~\n", "bootstrap_servers: must not be null"),
        ("max_batch: 5\nmax-batch: 7\n", "max_batch is set twice"),
        ("max_batch: 5\nmax_batch: 7\n", "duplicate key 'max_batch' (first at line 1)"),  # was last-wins
        ("eval_interval: 1" + "0" * 400 + "\n", "eval_interval: " + "1" + "0" * 19 + "... is too large"),
        ("sasl_password: 123456\n", "sasl_password: expected a string, got int (hidden)"),
        ('subscriptions: ""\n', "subscriptions: must not be empty"),
    ],
)
def test_bad_config_files_are_rejected_naming_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    config_file = write(tmp_path, text)
    with pytest.raises(UsageError) as caught:
        load_config({}, config_file, {})
    assert message in str(caught.value)
    assert str(config_file) in str(caught.value)


def test_secrets_are_masked_in_the_logged_settings() -> None:
    config = load_config(
        {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_username": "u",
            "sasl_password": "s3cret",
        },
        None,
        {},
    )
    assert config.redacted()["sasl_password"] == "***"
    assert config.kafka_settings().sasl_password == "s3cret"


def test_cli_reports_a_bad_setting_as_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--max-batch", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "finsent run: error: --max-batch: must be at least 1, got 0"


def test_cli_reports_a_missing_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["run", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "--config: no such file" in capsys.readouterr().err


def test_a_missing_config_file_named_by_the_environment_says_so(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="FINSENT_CONFIG: no such file"):
        load_config({}, None, {"FINSENT_CONFIG": str(tmp_path / "none.yaml")})


def test_the_services_token_budget_reaches_the_engine_and_is_checked_against_the_graph() -> None:
    assert load_engine(load_config({}, None, environ={})).max_tokens == 128  # the manifest's
    assert load_engine(load_config({}, None, {"FINSENT_MAX_TOKENS": "256"})).max_tokens == 256
    with pytest.raises(UsageError, match="max_tokens 600 is more than the 512 positions"):
        load_engine(load_config({"max_tokens": "600"}, None, environ={}))


def test_an_empty_variable_of_a_setting_that_defaults_to_none_is_unset() -> None:
    config = load_config({}, None, {"FINSENT_RULES": "", "FINSENT_SASL_USERNAME": ""})
    assert config.rules is None and config.sasl_username is None


def test_produce_reads_only_the_client_settings(tmp_path: Path) -> None:
    """`finsent produce` failed on service settings it never uses (a rules file, the drift threshold)."""
    environ = {
        "FINSENT_RULES": "/etc/finsent/rules.yaml",  # no such file
        "FINSENT_DRIFT_RETRAIN_THRESHOLD": "0.1",  # needs registry
        "FINSENT_INPUT_TOPIC": "same",
        "FINSENT_OUTPUT_TOPIC": "same",
        "FINSENT_CLIENT_ID": "replayer",
    }
    config_file = write(tmp_path, "bootstrap_servers: broker:9093\nmax_batch: 16\n")  # a service's file
    settings = load_client_settings({"bootstrap_servers": None}, config_file, environ)
    assert (settings.bootstrap_servers, settings.client_id) == ("broker:9093", "replayer")
    with pytest.raises(UsageError, match="bootstrap_servers:"):
        load_client_settings({"bootstrap_servers": "host:0"}, None, {})
    with pytest.raises(UsageError, match="sasl_mechanism is required"):
        load_client_settings({}, None, {"FINSENT_SECURITY_PROTOCOL": "SASL_SSL"})
    with pytest.raises(UsageError, match="unknown setting 'max_bach'"):
        load_client_settings({}, write(tmp_path, "max_bach: 3\n"), {})
