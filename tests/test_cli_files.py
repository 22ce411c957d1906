"""`finsent classify` / `evaluate` on good and bad files: what a user sees."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from finsent.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "finsent", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        (b"", ".csv", "file is empty"),
        (b"title,label\nStocks fall,0\n", ".csv", "no 'text' or 'headline' column"),
        (b"text\n", ".csv", "header but no rows"),
        ("text\nAktien f\u00e4llt\n".encode("latin-1"), ".csv", "not valid UTF-8"),
        (b'{"text": "ok"}\n{broken\n', ".jsonl", "cannot parse as JSONL: line 2"),
        (b'{"text": "ok"}\n\n[1, 2]\n', ".jsonl", "line 3 is a JSON array, not an object"),
        (b'"Stocks fall"\n', ".jsonl", "line 1 is a JSON string, not an object"),
        (b"\n\n", ".jsonl", "file is empty"),
        (b'[{"text": "ok"}]', ".json", "line 1 is a JSON array, not an object"),
        (b"{}\n{}\n", ".jsonl", "no 'text' or 'headline' column"),
        (b"text\nhello\n", ".xlsx", "unsupported file type"),
    ],
)
def test_bad_input_files_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, suffix: str, message: str
) -> None:
    path = tmp_path / f"input{suffix}"
    path.write_bytes(content)
    code = main(["classify", "--input", str(path), "--output", str(tmp_path / "out.csv")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err
    assert len(err.splitlines()) == 1


def test_missing_input_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["classify", "--input", str(tmp_path / "nope.csv"), "--output", str(tmp_path / "o.csv")]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.integration
def test_classify_writes_rows_plus_scores(tmp_path: Path) -> None:
    source = tmp_path / "news.jsonl"
    rows = [
        {"id": "a", "headline": "Shares plunge after profit warning"},
        {"id": "b", "headline": ""},
        {"id": "c", "headline": "Company raises dividend and beats earnings estimates"},
    ]
    source.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "scored.csv"
    result = run_cli("classify", "--input", str(source), "--output", str(out))
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table["id"]) == ["a", "b", "c"]
    for column in ("topic", "topic_score", "sentiment", "p_negative", "p_neutral", "p_positive"):
        assert column in table.columns
    assert table.loc[0, "sentiment"] == "negative"
    assert table.loc[1, "sentiment"] == ""  # empty text is kept, unscored
    probabilities = table[["p_negative", "p_neutral", "p_positive"]].iloc[[2]].astype(float).to_numpy()[0]
    assert abs(probabilities.sum() - 1) < 1e-3
    assert "1 rows with empty text left unscored" in result.stderr


@pytest.mark.integration
def test_evaluate_prints_accuracy_macro_f1_and_per_class(tmp_path: Path) -> None:
    data = tmp_path / "gold.csv"
    pd.DataFrame(
        {
            "text": [
                "Stock plunges on weak guidance",
                "Shares soar on record profit",
                "Company to hold annual meeting",
            ],
            "label": ["negative", "positive", "neutral"],
        }
    ).to_csv(data, index=False)
    result = run_cli("evaluate", "--data", str(data), "--task", "sentiment")
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout and "macro-F1" in result.stdout
    assert "negative" in result.stdout and "positive" in result.stdout


def test_evaluate_rejects_unknown_labels_naming_the_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "gold.csv"
    data.write_text("text,label\nStocks up,positive\nStocks down,very bad\n")
    assert main(["evaluate", "--data", str(data), "--task", "sentiment"]) == 2
    assert "row 3" in capsys.readouterr().err
