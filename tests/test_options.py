"""Shared settings machinery: one value's conversion and bounds, flags, and the merge of the sources."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from finsent.errors import UsageError
from finsent.options import Option, add_option_flags, convert, merge_settings
from monitor import parse_duration

RATE = Option("rate", float, 1.0, "a rate", above=0, maximum=10)
COUNT = Option("count", int, None, "a count", minimum=2)
PAUSE = Option("pause", float, 5.0, "a pause", duration=True, minimum=1)
DRY_RUN = Option("dry_run", bool, False, "do nothing", switch=True)
OUTPUT = Option("output", Path, None, "where to write", shown_default="out/")


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        (RATE, "2.5", 2.5),
        (RATE, 10, 10.0),
        (COUNT, " 7 ", 7),
        (PAUSE, "2m", 120.0),
        (DRY_RUN, "on", True),
        (OUTPUT, "~/x", Path("~/x").expanduser()),
    ],
)
def test_values_are_converted_to_the_option_type(option: Option, value: Any, expected: Any) -> None:
    assert convert(option, value, "where") == expected


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        (RATE, "0", "where: must be above 0, got 0.0"),
        (RATE, "11", "where: must be at most 10, got 11.0"),
        (RATE, "nan", "where: expected a finite number, got 'nan'"),
        (RATE, True, "where: expected a number, got True"),
        (RATE, None, "where: must not be null (leave the key out to get 1.0)"),
        (COUNT, "1", "where: must be at least 2, got 1"),
        (COUNT, 2.0, "where: expected an integer, got 2.0"),
        (COUNT, False, "where: expected an integer, got False"),
        (COUNT, [2, 3], "where: expected an integer"),
        (PAUSE, "500ms", "where: must be at least 1, got 0.5"),
        (OUTPUT, {"a": 1}, "where: expected a string, got dict"),
        (OUTPUT, " ", "where: must not be empty"),
        (COUNT, "", "where: must not be empty (leave it out for none)"),  # not a quiet "none"
    ],
)
def test_bad_values_fail_naming_where_they_came_from(option: Option, value: Any, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        convert(option, value, "where")
    assert str(caught.value) == message or str(caught.value).startswith(message)


def test_flag_beats_file_beats_environment_beats_default(tmp_path: Path) -> None:
    options = (RATE, COUNT, PAUSE, DRY_RUN)
    config_file = tmp_path / "settings.yaml"
    config_file.write_text("count: 4\npause: 3s\n")
    environ = {"FINSENT_RATE": "3", "FINSENT_COUNT": "5", "FINSENT_PAUSE": "9", "FINSENT_DRY_RUN": "yes"}
    values = merge_settings(options, {"rate": "2", "count": None}, config_file, environ)
    assert values == {"rate": 2.0, "count": 4, "pause": 3.0, "dry_run": True}
    # An empty variable of a setting that defaults to none is unset.
    assert merge_settings(options, {}, None, {"FINSENT_COUNT": ""})["count"] is None
    assert merge_settings(options, {}, None, {"FINSENT_COUNT": "  "})["count"] is None
    assert merge_settings(options, {}, None, {}) == {
        "rate": 1.0,
        "count": None,
        "pause": 5.0,
        "dry_run": False,
    }


def test_a_file_value_error_names_the_file_and_key(tmp_path: Path) -> None:
    config_file = tmp_path / "settings.yaml"
    config_file.write_text("count: 1\n")
    with pytest.raises(UsageError, match=f"config file {config_file}: count: must be at least 2"):
        merge_settings((COUNT,), {}, config_file, {})


def test_flags_show_default_and_variable_and_switches_take_no_value() -> None:
    parser = argparse.ArgumentParser()
    add_option_flags(parser, (RATE, DRY_RUN, OUTPUT))
    args = parser.parse_args(["--dry-run", "--rate", "4"])
    assert (args.dry_run, args.rate, args.output) == (True, "4", None)
    assert OUTPUT.help_text == "where to write (default: out/; env FINSENT_OUTPUT)"
    assert COUNT.help_text == "a count (default: none; env FINSENT_COUNT)"


@pytest.mark.parametrize(
    ("seconds", "shown"), [(21600.0, "6h"), (120.0, "2m"), (90.0, "90s"), (5.0, "5s"), (0.5, "0.5s")]
)
def test_help_shows_a_duration_default_as_the_flag_takes_it(seconds: float, shown: str) -> None:
    option = Option("span", float, seconds, "a time span", duration=True)
    assert f"(default: {shown}; env FINSENT_SPAN)" in option.help_text
    assert parse_duration(shown) == seconds
