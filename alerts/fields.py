"""Reading typed fields out of YAML mappings with errors that name the file, the item and the field."""

from __future__ import annotations

import difflib
import math
import re
import reprlib
from collections.abc import Callable, Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode
from yaml.reader import ReaderError

from model.labels import TOPIC_LABELS
from monitor.config import OTHER_TOPIC, parse_duration

# The topics an alert can be about: the model's labels, and the monitor's bucket for the rest.
KNOWN_TOPICS: tuple[str, ...] = (*TOPIC_LABELS, OTHER_TOPIC)

SEVERITIES = ("info", "warning", "critical")
"""Allowed severities, least severe first."""

LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

MAX_DURATION = "365d"
"""The longest duration any rule or subscription field accepts unless the field sets its own bound."""

_SHORT = reprlib.Repr()
_SHORT.maxlong = 24
_SHORT.maxstring = 80


def shown(value: object) -> str:
    """``repr(value)`` cut short enough for a one-line message (a 400-digit number is elided)."""
    try:
        return _SHORT.repr(value)
    except ValueError:  # an int past Python's 4300-digit str() limit
        return "an integer too long to print"


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def severity_rank(severity: str) -> int:
    """Position of ``severity`` in :data:`SEVERITIES` (higher is more severe)."""
    return SEVERITIES.index(severity)


class YamlError(ValueError):
    """A YAML file or text that cannot be loaded; the one-line message names the source, where and what."""


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key repeated in one mapping is an error, not last-wins."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        """The mapping, after refusing a key its node repeats (keys merged in with ``<<`` may be overridden)."""
        seen: dict[Any, Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:
                continue  # an unhashable key: the base class reports it
            if first is not key_node:
                problem = f"duplicate key {shown(key)} (first at line {first.start_mark.line + 1})"
                raise ConstructorError(None, None, problem, key_node.start_mark)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: ScalarNode) -> int:
        """An int, or a marked error where Python refuses to convert that many digits."""
        try:
            return super().construct_yaml_int(node)
        except ValueError:
            raise ConstructorError(None, None, "integer has too many digits", node.start_mark) from None


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int)


def _line_column(text: str, position: int) -> tuple[int, int]:
    line_start = text.rfind("\n", 0, position) + 1
    return text.count("\n", 0, position) + 1, position - line_start + 1


def _yaml_problem(error: yaml.YAMLError, text: str) -> tuple[str, str]:
    """Where (``at line L, column C`` or empty) and what for one YAML error."""
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        # PyYAML's own order: "while parsing a flow node" (context), "expected ..." (problem).
        what = ", ".join(part for part in (error.context, error.problem) if part) or type(error).__name__
        return (f"at line {mark.line + 1}, column {mark.column + 1}" if mark else ""), what
    if isinstance(error, ReaderError) and isinstance(error.character, int):
        line, column = _line_column(text, error.position)
        return f"at line {line}, column {column}", f"{error.reason} (character #x{error.character:04x})"
    return "", str(error) or type(error).__name__


def load_yaml_text(text: str, source: str) -> Any:
    """The one YAML document in ``text`` (safe types only); :class:`YamlError` names ``source``, line and column.

    Unlike ``yaml.safe_load``, a key repeated in one mapping is an error: last-wins would let a second
    ``rate_above:`` quietly replace the first.
    """
    try:
        return yaml.load(text, Loader=_StrictLoader)  # safe: _StrictLoader is a SafeLoader
    except yaml.YAMLError as error:
        where, what = _yaml_problem(error, text)
    except RecursionError:
        where, what = "", "nested too deeply"
    # PyYAML's problems can span lines and quote the text; the message must stay one line.
    raise YamlError(f"{source}: invalid YAML{' ' + where if where else ''}: {' '.join(what.split())}")


def read_yaml_file(path: Path) -> Any:
    """The YAML document in the UTF-8 file at ``path``; :class:`YamlError` (one line naming the file) otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise YamlError(f"{path}: cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        line = error.object.count(b"\n", 0, error.start) + 1
        raise YamlError(
            f"{path}: not UTF-8 text: byte 0x{error.object[error.start]:02x} on line {line}"
        ) from None
    return load_yaml_text(text, str(path))


def load_yaml_list(path: Path, key: str, error: type[ValueError]) -> tuple[list[Any], str]:
    """The list under top-level ``key`` of the YAML file at ``path``, and the source name for messages."""
    source = str(path)
    try:
        data = read_yaml_file(path)
    except YamlError as problem:
        raise error(str(problem)) from None
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

    def number(
        self, name: str, default: float | None, *, low: float = -math.inf, high: float = math.inf
    ) -> float | None:
        """A finite number in [low, high], or ``default`` when absent."""
        value = self.item.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
            self.fail(name, f"expected a finite number, got {shown(value)}")
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

    def duration(
        self, name: str, default: float, *, positive: bool = False, at_most: str = MAX_DURATION
    ) -> float:
        """Seconds from a duration like ``"5m"`` or a number of seconds (at most ``at_most``), or ``default``."""
        value = self.item.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.fail(name, f"invalid duration {shown(value)}")
        try:
            seconds = parse_duration(value)
        except OverflowError:  # an int too large for a float: over any bound
            seconds = math.inf
        except ValueError:
            self.fail(name, f"invalid duration {shown(value)}")
        if positive and seconds <= 0:
            self.fail(name, f"must be positive, got {shown(value)}")
        if seconds > parse_duration(at_most):
            self.fail(name, f"must be at most {at_most}, got {shown(value)}")
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

    def topic_list(self, name: str) -> tuple[str, ...] | None:
        """string_list of news topic labels the model gives (or ``other``); a typo would never match."""
        topics = self.string_list(name)
        for topic in topics or ():
            if topic not in KNOWN_TOPICS:
                close = difflib.get_close_matches(topic, KNOWN_TOPICS, n=1)
                hint = (
                    f"did you mean {close[0]!r}?" if close else f"one of {', '.join(map(repr, KNOWN_TOPICS))}"
                )
                self.fail(name, f"unknown topic {topic!r} ({hint})")
        return topics

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
