"""Command settings: one option's type and checks, its flag, and the merge flags > file > environment > defaults."""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finsent.errors import UsageError
from finsent.settings_file import parse_bool, read_settings_file
from monitor import parse_duration

ENV_PREFIX = "FINSENT_"
SETTINGS_GROUP = "settings (flag > --config file > FINSENT_<NAME> environment > default)"


@dataclass(frozen=True)
class Option:
    """One setting: its type, default, bounds and help text; flag, YAML key and variable share its name."""

    name: str
    kind: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None  # an exclusive lower bound: the value must be greater than this
    secret: bool = False
    # A float setting that is a time span: it also takes "500ms", "2m", "6h".
    duration: bool = False
    aliases: tuple[str, ...] = ()  # more flags for the same setting
    switch: bool = False  # a bool flag without a value (sets true); file and environment take true/false
    shown_default: str | None = None  # what a None default means, for --help (e.g. "data/")

    @property
    def flag(self) -> str:
        """The command-line flag, e.g. --max-batch."""
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        """The environment variable, e.g. FINSENT_MAX_BATCH."""
        return ENV_PREFIX + self.name.upper()

    @property
    def help_text(self) -> str:
        """The --help line: help, default and variable."""
        if self.duration and self.default is not None:
            default = _duration_text(self.default)
        elif self.default is not None:
            default = str(self.default)
        else:
            default = "none" if self.shown_default is None else self.shown_default
        return f"{self.help} (default: {default}; env {self.env})"


def _duration_text(seconds: float) -> str:
    """A default time span as the flags take it: 21600 -> "6h", 90 -> "90s", 0.5 -> "0.5s"."""
    if seconds >= 60 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def add_option_flags(parser: argparse.ArgumentParser, options: Iterable[Option]) -> None:
    """One flag per option in a settings group; an absent flag leaves the setting to the file, env or default."""
    group = parser.add_argument_group(SETTINGS_GROUP)
    for option in options:
        if option.switch:
            group.add_argument(
                option.flag,
                *option.aliases,
                dest=option.name,
                action="store_true",
                default=None,
                help=option.help_text,
            )
            continue
        group.add_argument(
            option.flag,
            *option.aliases,
            dest=option.name,
            default=None,
            metavar=option.name.upper() if not option.choices else "{" + ",".join(option.choices) + "}",
            help=option.help_text,
        )


def merge_settings(
    options: Iterable[Option],
    flags: Mapping[str, Any],
    config_file: Path | None,
    environ: Mapping[str, str],
    named_by: str = "--config",
    file_may_hold: Iterable[str] = (),
) -> dict[str, Any]:
    """Each option's value from its flag > the YAML file > its FINSENT_ variable > its default, converted.

    named_by is what pointed at the file (a flag or an environment variable), for the message;
    file_may_hold names more settings the file may set (for other commands), which are not read.
    """
    options = tuple(options)
    known = {option.name for option in options} | set(file_may_hold)
    from_file = read_settings_file(config_file, known, named_by) if config_file is not None else {}
    values: dict[str, Any] = {}
    for option in options:
        if flags.get(option.name) is not None:
            values[option.name] = convert(option, flags[option.name], option.flag)
        elif option.name in from_file:
            values[option.name] = convert(
                option, from_file[option.name], f"config file {config_file}: {option.name}"
            )
        elif option.env in environ and not (not environ[option.env].strip() and option.default is None):
            # An empty variable of a setting that defaults to none is unset (as compose's ${X:-} gives).
            values[option.name] = convert(option, environ[option.env], option.env)
        else:
            values[option.name] = option.default
    return values


def convert(option: Option, value: Any, where: str) -> Any:
    """Turn a raw value (string from env/flags or a YAML scalar) into the option's type, or fail naming where."""
    if value is None:
        if option.default is not None:  # only a YAML null gets here: it must not switch a check off
            raise UsageError(f"{where}: must not be null (leave the key out to get {option.default})")
        return None
    if isinstance(value, str) and not value.strip() and option.default is None:
        # `--rules "$RULES"` with RULES unset must not quietly turn alerting off.
        raise UsageError(f"{where}: must not be empty (leave it out for none)")
    if option.kind is bool:
        return parse_bool(value, where)
    if option.kind is float:
        number = _to_seconds(value, where) if option.duration else _to_float(value, where)
        _check_bounds(option, number, where)
        return number
    if option.kind is int:
        whole = _to_int(value, where)
        _check_bounds(option, whole, where)
        return whole
    return _to_text(option, value, where)


def _to_seconds(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise UsageError(f"{where}: expected a duration in seconds, got {value!r}")
    try:
        return parse_duration(value if isinstance(value, int | float) else str(value))
    except ValueError as error:
        raise UsageError(f"{where}: {error}") from None
    except OverflowError:  # a YAML integer too large for a float
        raise UsageError(f"{where}: {str(value)[:20]}... is too large") from None


def _to_float(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise UsageError(f"{where}: expected a number, got {value!r}")
    try:
        number = float(value if isinstance(value, int | float) else str(value).strip())
    except (ValueError, OverflowError):
        raise UsageError(f"{where}: expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise UsageError(f"{where}: expected a finite number, got {value!r}")
    return number


def _to_int(value: Any, where: str) -> int:
    if isinstance(value, bool | float):
        raise UsageError(f"{where}: expected an integer, got {value!r}")
    try:
        return int(str(value).strip())
    except ValueError:
        raise UsageError(f"{where}: expected an integer, got {value!r}") from None


def _check_bounds(option: Option, number: float, where: str) -> None:
    if option.minimum is not None and number < option.minimum:
        raise UsageError(f"{where}: must be at least {option.minimum}, got {number}")
    if option.above is not None and number <= option.above:
        raise UsageError(f"{where}: must be above {option.above}, got {number}")
    if option.maximum is not None and number > option.maximum:
        raise UsageError(f"{where}: must be at most {option.maximum}, got {number}")


def _to_text(option: Option, value: Any, where: str) -> str | Path:
    """A path, one of the option's choices (matched case-insensitively) or a non-empty string."""
    if not isinstance(value, str | Path):
        shown = "(hidden)" if option.secret else repr(value)
        raise UsageError(f"{where}: expected a string, got {type(value).__name__} {shown}")
    text = str(value).strip()
    if option.kind is Path:
        if not text:  # Path("") is the current folder, never what an empty setting meant
            raise UsageError(f"{where}: must not be empty")
        return Path(text).expanduser()
    if option.choices:
        canonical = {choice.lower(): choice for choice in option.choices}
        if text.lower() not in canonical:
            raise UsageError(f"{where}: must be one of {', '.join(option.choices)}, got {text!r}")
        return canonical[text.lower()]
    if not text:
        raise UsageError(f"{where}: must not be empty")
    return text
