"""Reading typed fields out of YAML mappings with errors that name the file, the item and the field."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import yaml

from monitor.config import parse_duration

SEVERITIES = ("info", "warning", "critical")
"""Allowed severities, least severe first."""

LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def severity_rank(severity: str) -> int:
    """Position of ``severity`` in :data:`SEVERITIES` (higher is more severe)."""
    return SEVERITIES.index(severity)


def load_yaml_list(path: Path, key: str, error: type[ValueError]) -> tuple[list[Any], str]:
    """The list under top-level ``key`` of the YAML file at ``path``, and the source name for messages."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{source}: cannot read: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{source}: invalid YAML: {exc}") from exc
    return top_level_list(data, key, source, error), source


def top_level_list(data: object, key: str, source: str, error: type[ValueError]) -> list[Any]:
    """Validate the document shape ``{key: [...]}`` (extra top-level keys are errors)."""
    if not isinstance(data, Mapping):
        raise error(f"{source}: expected a mapping with a top-level {key!r} list")
    unknown = sorted(str(name) for name in data if name != key)
    if unknown:
        raise error(f"{source}: unknown top-level key(s) {', '.join(map(repr, unknown))}; expected {key!r}")
    items = data.get(key)
    if not isinstance(items, list):
        raise error(f"{source}: {key!r} must be a list")
    return items


def reject_duplicate_names(names: Iterable[str], source: str, kind: str, error: type[ValueError]) -> None:
    """Raise ``error`` naming the first repeated ``kind`` name (a rule or a subscription)."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise error(f"{source}: {kind} {name!r}: field 'name': duplicate {kind} name")
        seen.add(name)


class Fields:
    """One YAML item being read; every error names ``prefix`` (file and item) and the field."""

    def __init__(self, item: Mapping[str, Any], prefix: str, error: type[ValueError]) -> None:
        self.item = item
        self.prefix = prefix
        self.error = error

    def fail(self, name: str, message: str) -> NoReturn:
        """Raise the configured error for field ``name``."""
        raise self.error(f"{self.prefix}: field {name!r}: {message}")

    def reject_unknown(self, allowed: set[str]) -> None:
        """Fail on the first key that is not in ``allowed``."""
        for name in self.item:
            if name not in allowed:
                self.fail(str(name), f"unknown field; expected one of {', '.join(sorted(allowed))}")

    def has(self, name: str) -> bool:
        """True when ``name`` is present and not null."""
        return self.item.get(name) is not None

    def string(self, name: str, default: str | None = None, choices: tuple[str, ...] | None = None) -> str:
        """A non-empty string (required when ``default`` is None)."""
        value = self.item.get(name)
        if value is None:
            if default is None:
                self.fail(name, "required")
            return default
        if not isinstance(value, str) or not value.strip():
            self.fail(name, f"expected a non-empty string, got {value!r}")
        if choices is not None and value not in choices:
            self.fail(name, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def optional_string(self, name: str) -> str | None:
        """A non-empty string or None when absent."""
        return self.string(name) if self.has(name) else None

    def number(
        self, name: str, default: float | None, *, low: float = -math.inf, high: float = math.inf
    ) -> float | None:
        """A finite number in [low, high], or ``default`` when absent."""
        value = self.item.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.fail(name, f"expected a finite number, got {value!r}")
        if not low <= value <= high:
            self.fail(name, f"{value!r} is outside [{low}, {high}]")
        return float(value)

    def integer(self, name: str, default: int, *, low: int = 0) -> int:
        """An integer of at least ``low``, or ``default`` when absent."""
        value = self.item.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(name, f"expected an integer, got {value!r}")
        if value < low:
            self.fail(name, f"must be at least {low}, got {value}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        """A YAML boolean, or ``default`` when absent."""
        value = self.item.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(name, f"expected true or false, got {value!r}")
        return value

    def duration(self, name: str, default: float, *, positive: bool = False) -> float:
        """Seconds from a duration like ``"5m"`` or a number of seconds, or ``default`` when absent."""
        value = self.item.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.fail(name, f"invalid duration {value!r}")
        try:
            seconds = parse_duration(value)
        except ValueError:
            self.fail(name, f"invalid duration {value!r}")
        if positive and seconds <= 0:
            self.fail(name, f"must be positive, got {value!r}")
        return seconds

    def string_list(self, name: str) -> tuple[str, ...] | None:
        """A non-empty list of distinct non-empty strings, or None when absent."""
        value = self.item.get(name)
        if value is None:
            return None
        if not isinstance(value, list) or not value:
            self.fail(name, f"expected a non-empty list of strings, got {value!r}")
        for entry in value:
            if not isinstance(entry, str) or not entry.strip():
                self.fail(name, f"expected non-empty strings, got {entry!r}")
        if len(set(value)) != len(value):
            self.fail(name, "contains duplicates")
        return tuple(value)

    def string_map(self, name: str, check_key: Callable[[str], str | None] | None = None) -> dict[str, str]:
        """A mapping of strings to strings (numbers are not coerced); ``check_key`` returns an error or None."""
        value = self.item.get(name)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(name, f"expected a mapping of strings, got {value!r}")
        result: dict[str, str] = {}
        for key, entry in value.items():
            if not isinstance(key, str) or not isinstance(entry, str):
                self.fail(name, f"key {key!r}: keys and values must be strings, got {entry!r}")
            problem = check_key(key) if check_key is not None else None
            if problem:
                self.fail(f"{name}.{key}", problem)
            result[key] = entry
        return result
