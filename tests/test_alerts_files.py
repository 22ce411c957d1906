"""Rules and subscriptions files as bytes on disk: duplicate keys, broken YAML, non-UTF-8, giant numbers.

Every mistake is one line that names the file (and where), never a traceback or PyYAML's five-line
report about "<unicode string>".
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from alerts import (
    RulesError,
    SubscriptionsError,
    YamlError,
    load_rules,
    load_subscriptions,
    load_yaml_text,
    read_yaml_file,
)

BIG = "1" + "0" * 400


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def one_line(error: pytest.ExceptionInfo[ValueError]) -> str:
    message = str(error.value)
    assert len(message.splitlines()) == 1, message
    return message


def test_a_repeated_rule_field_is_refused_not_last_wins(tmp_path: Path) -> None:
    path = write(tmp_path, "rules.yaml", "rules:\n  - name: r\n    rate_above: 0.7\n    rate_above: 0.9\n")
    with pytest.raises(RulesError) as info:
        load_rules(path)
    assert one_line(info) == (
        f"{path}: invalid YAML at line 4, column 5: duplicate key 'rate_above' (first at line 3)"
    )


def test_a_repeated_kind_names_the_key_not_a_misleading_field(tmp_path: Path) -> None:
    text = "subscriptions:\n  - name: k\n    kind: webhook\n    kind: kafka\n"
    with pytest.raises(SubscriptionsError) as info:
        load_subscriptions(write(tmp_path, "subs.yaml", text))
    assert "subs.yaml: invalid YAML at line 4, column 5: duplicate key 'kind' (first at line 3)" in one_line(
        info
    )


@pytest.mark.parametrize(
    "text",
    [
        "rules: []\nrules: []\n",
        "rules:\n  - {name: r, rate_above: 0.5, labels: {team: a, team: b}}\n",
        "rules:\n  - {name: r, rate_above: 0.5, 1: a, 1.0: b}\n",
    ],
)
def test_duplicate_keys_are_refused_at_any_depth(tmp_path: Path, text: str) -> None:
    with pytest.raises(RulesError, match="duplicate key"):
        load_rules(write(tmp_path, "rules.yaml", text))


def test_merge_keys_may_still_be_overridden() -> None:
    text = "base: &b {x: 1, y: 2}\nderived:\n  <<: *b\n  x: 3\n"
    assert load_yaml_text(text, "t.yaml") == {"base": {"x": 1, "y": 2}, "derived": {"x": 3, "y": 2}}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            "rules: [\n",
            "invalid YAML at line 2, column 1: while parsing a flow node, expected the node content",
        ),
        ("rules:\n  - name: r\n   rate_above: 1\n", "invalid YAML at line 3, column 4:"),
        ("rules: []\n\x00\n", "invalid YAML at line 2, column 1: special characters are not allowed"),
        (
            "rules: []\n---\nrules: []\n",
            "invalid YAML at line 2, column 1: expected a single document in the stream, but found another",
        ),
        (
            "rules: [{name: r, rate_above: 0.5, cooldown: 1" + "0" * 5000 + "}]\n",
            "integer has too many digits",
        ),
        ("rules: " + "[" * 5000 + "]" * 5000 + "\n", "invalid YAML: nested too deeply"),
        (b"rules: []\n# caf\xe9\n", "not UTF-8 text: byte 0xe9 on line 2"),
        (b"\xff\xfe" + "rules: []\n".encode("utf-16-le"), "not UTF-8 text: byte 0xff on line 1"),
    ],
)
def test_unreadable_files_are_one_line_naming_the_file(
    tmp_path: Path, content: str | bytes, expected: str
) -> None:
    path = write(tmp_path, "rules.yaml", content)
    with pytest.raises(RulesError) as info:
        load_rules(path)
    message = one_line(info)
    assert message.startswith(f"{path}: ") and expected in message
    assert "<unicode string>" not in message
    with pytest.raises(SubscriptionsError) as sub_info:
        load_subscriptions(write(tmp_path, "subs.yaml", content))
    assert expected in one_line(sub_info)


def test_load_yaml_text_contract() -> None:
    assert load_yaml_text("a: [1, 2.5, x, true, null]\n", "s") == {"a": [1, 2.5, "x", True, None]}
    assert load_yaml_text("", "s") is None
    with pytest.raises(YamlError) as info:
        load_yaml_text("a: 1\nb: !!python/object:os.system x\n", "settings.yaml")
    assert isinstance(info.value, ValueError)
    assert one_line(info).startswith("settings.yaml: invalid YAML at line 2, column 4: could not determine")


def test_read_yaml_file_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(YamlError, match=r"absent\.yaml: cannot read: No such file"):
        read_yaml_file(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    ("flag", "name", "text", "expected"),
    [
        ("--rules", "rules.yaml", f"rules: [{{name: r1, surge_above: {BIG}}}]\n", "field 'surge_above'"),
        (
            "--rules",
            "rules.yaml",
            "rules:\n - name: r\n   rate_above: 0.7\n   rate_above: 0.9\n",
            "duplicate key",
        ),
        ("--rules", "rules.yaml", b"rules: []\n\xff\n", "not UTF-8 text"),
        (
            "--subscriptions",
            "subs.yaml",
            "subscriptions: [{name: w, kind: webhook, url: 'http://127.0.0.1:70000/h', secret: s}]\n",
            "field 'url'",
        ),
        (
            "--subscriptions",
            "subs.yaml",
            "subscriptions: [{name: w, kind: webhook, url: 'http://[::1/h', secret: s}]\n",
            "field 'url'",
        ),
    ],
)
def test_finsent_run_exits_2_with_one_line(
    tmp_path: Path, flag: str, name: str, text: str | bytes, expected: str
) -> None:
    path = write(tmp_path, name, text)
    argv = ["run", "--stage", "alerts", flag, str(path), "--state-dir", str(tmp_path / "state")]
    argv += ["--bootstrap-servers", "127.0.0.1:1", "--metrics-port", "0"]
    # A subprocess with a timeout: a file that wrongly loads would start the service, which runs until stopped.
    done = subprocess.run(
        [sys.executable, "-m", "finsent", *argv], capture_output=True, text=True, timeout=60, check=False
    )
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert (
        len(errors) == 1 and errors[0].startswith(f"finsent run: error: {path}: ") and expected in errors[0]
    )
