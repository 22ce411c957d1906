"""What the service and retrain settings share: the --config YAML file and true/false words."""

from __future__ import annotations

from collections.abc import Container
from pathlib import Path
from typing import Any

from alerts import YamlError, read_yaml_file
from finsent.errors import UsageError

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}


def read_settings_file(path: Path, known: Container[str], named_by: str = "--config") -> dict[str, Any]:
    """A YAML mapping of setting: value (dashes read as underscores); unknown or doubled keys fail naming them.

    named_by is what pointed at the file (a flag or an environment variable), for the message.
    """
    if not path.is_file():
        raise UsageError(f"{named_by}: no such file {path}")
    try:
        loaded = read_yaml_file(path)  # one line per problem; a key given twice is one of them
    except YamlError as error:
        raise UsageError(f"config file {error}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UsageError(f"config file {path}: expected a mapping of setting: value at the top level")
    values: dict[str, Any] = {}
    for key, value in loaded.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise UsageError(f"config file {path}: unknown setting {key!r}")
        if name in values:
            raise UsageError(
                f"config file {path}: {name} is set twice (as {name} and {name.replace('_', '-')})"
            )
        values[name] = value
    return values


def parse_bool(value: Any, where: str) -> bool:
    """A YAML boolean or one of the true/false words (1/0, yes/no, on/off), or fail naming where."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS | FALSE_WORDS:
        return word in TRUE_WORDS
    raise UsageError(f"{where}: expected true or false, got {value!r}")
