"""`finsent classify` / `evaluate` on good and bad files: what a user sees."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from finsent.cli import main
from finsent.errors import UsageError
from finsent.tables import load_table, row_texts, write_table
from model import DEFAULT_MODEL_DIR, SENTIMENT_LABELS


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
        (
            b"id,headline\n1,Oil plunges,extra\n2,Apple beats\n",
            ".csv",
            "row 2 has 3 cells but the header names 2",
        ),
        (
            b'{"id": "1", "headline": "a\\ud800b"}\n',
            ".jsonl",
            "line 1: a string holds a lone UTF-16 surrogate",
        ),
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


# --- the output file: checked before any work, written whole or not at all ---------------------


def write_rows(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--max-tokens", "2"], "--max-tokens must be at least 8, got 2"),
        (["--max-tokens", "0"], "--max-tokens must be at least 8, got 0"),
        (["--model", "BROKEN"], "has sha256"),
    ],
)
def test_classify_in_place_keeps_the_file_when_the_model_or_options_are_bad(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(DEFAULT_MODEL_DIR, broken)
    with (broken / "tokenizer.json").open("a") as handle:
        handle.write(" ")
    data = tmp_path / "news.csv"
    data.write_text("id,text\n1,Stocks fall\n2,Markets rally\n")
    before = data.read_bytes()
    options = [str(broken) if option == "BROKEN" else option for option in options]
    code = main(["classify", "--input", str(data), "--output", str(data), *options])
    assert data.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "news.csv"]  # no temp file left
    assert code == 2 and message in one_error_line(capsys)


def test_a_failed_write_leaves_the_old_file_whole_and_no_temp_file(tmp_path: Path) -> None:
    from finsent.tables import replacing

    target = tmp_path / "scored.csv"
    target.write_text("old,content\n1,2\n")
    with pytest.raises(RuntimeError), replacing(target) as handle:
        handle.write("new,con")
        raise RuntimeError("disk gone")
    assert target.read_text() == "old,content\n1,2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["scored.csv"]


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("folder", "is a folder"),
        ("folder.csv", "is a folder"),
        ("afile/x.csv", "afile is not a folder"),
        ("missing/x.csv", "does not exist"),
    ],
)
def test_unusable_output_paths_exit_2_before_the_model_loads(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    output: str,
    message: str,
) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "afile").write_text("x")
    data = tmp_path / "gold.csv"
    data.write_text("text,label\nStocks fall,negative\n")
    monkeypatch.setattr("finsent.commands.common.Engine", _no_engine)
    code = main(["classify", "--input", str(data), "--output", str(tmp_path / output)])
    assert code == 2 and message in one_error_line(capsys)
    code = main(["evaluate", "--data", str(data), "--task", "sentiment", "--json", str(tmp_path / output)])
    assert code == 2 and message in one_error_line(capsys)


def _no_engine(*args: object, **kwargs: object) -> None:
    raise AssertionError("the model was loaded before the output path was checked")


@pytest.mark.integration
def test_classify_in_place_replaces_the_input_with_its_scored_rows(tmp_path: Path) -> None:
    data = tmp_path / "news.csv"
    data.write_text("id,text\n1,Shares plunge after profit warning\n2,\n")
    assert main(["classify", "--input", str(data), "--output", str(data)]) == 0
    table = pd.read_csv(data, keep_default_na=False)
    assert list(table["id"]) == [1, 2]
    assert list(table["sentiment"]) == ["negative", ""]


# --- which text a row has: the stream's rule, headline first ------------------------------------


@pytest.mark.integration
def test_classify_takes_each_rows_headline_else_its_text(tmp_path: Path) -> None:
    csv = tmp_path / "both.csv"
    pd.DataFrame(
        {
            "text": ["", "Shares soar to a record on blowout profit", "Shares plunge after profit warning"],
            "headline": ["Shares plunge after profit warning", "Shares plunge after profit warning", ""],
        }
    ).to_csv(csv, index=False)
    out = tmp_path / "both_scored.csv"
    assert main(["classify", "--input", str(csv), "--output", str(out)]) == 0
    # Row 1 has only a headline, row 2 both (the headline wins), row 3 only text: all scored.
    assert list(pd.read_csv(out)["sentiment"]) == ["negative", "negative", "negative"]


@pytest.mark.integration
def test_classify_jsonl_scores_headline_only_and_text_only_lines_and_writes_valid_json(
    tmp_path: Path,
) -> None:
    source = tmp_path / "mixed.jsonl"
    write_rows(
        source,
        [
            {"id": 1, "headline": "Shares plunge after profit warning"},
            {"id": 2, "text": "Shares plunge after profit warning"},
            {"id": 3, "text": "   "},
        ],
    )
    out = tmp_path / "scored.jsonl"
    assert main(["classify", "--input", str(source), "--output", str(out)]) == 0
    lines = out.read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [row["sentiment"] for row in rows] == ["negative", "negative", None]
    for line in lines:
        json.loads(line, parse_constant=_not_json)  # unscored cells are null, not NaN
    assert [row["id"] for row in rows] == [1, 2, 3]  # ints stay ints
    assert rows[2]["p_negative"] is None and rows[0]["headline"] and rows[0]["text"] is None


def _not_json(name: str) -> None:
    raise AssertionError(f"{name} is not JSON")


@pytest.mark.parametrize(
    ("value", "kind"),
    [(["a", "b"], "array"), ({"x": 1}, "object"), (True, "boolean"), (5, "number")],
)
@pytest.mark.parametrize("field", ["text", "headline"])
def test_non_string_jsonl_text_exits_2_naming_line_and_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: object, kind: str, field: str
) -> None:
    source = tmp_path / "types.jsonl"
    source.write_text(json.dumps({"text": "ok"}) + "\n\n" + json.dumps({field: value, "label": 0}) + "\n")
    assert main(["classify", "--input", str(source), "--output", str(tmp_path / "o.csv")]) == 2
    assert f"line 3: '{field}' is a JSON {kind}, not a string" in one_error_line(capsys)
    assert main(["evaluate", "--data", str(source), "--task", "sentiment"]) == 2
    assert f"line 3: '{field}' is a JSON {kind}, not a string" in one_error_line(capsys)


@pytest.mark.integration
def test_evaluate_skips_and_counts_rows_without_text(tmp_path: Path) -> None:
    data = tmp_path / "gold.csv"
    data.write_text(
        "text,headline,label\n"
        ",Shares plunge after profit warning,negative\n"
        ",,positive\n"
        "Shares soar on record profit,,positive\n"
    )
    report = tmp_path / "report.json"
    result = run_cli("evaluate", "--data", str(data), "--task", "sentiment", "--json", str(report))
    assert result.returncode == 0, result.stderr
    assert json.loads(report.read_text())["support"] == 2
    assert "1 rows with empty text skipped" in result.stderr


# --- labels: as written in the file, problems named by CSV row or JSONL line --------------------


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"text": "Stocks fall", "label": 0}', '{"text": "Markets rally"}'], "line 2: no label"),
        (['{"text": "Stocks fall", "label": 0}', '{"text": "Up", "label": null}'], "line 2: no label"),
        (['{"text": "Stocks fall", "label": 0}', "", '{"text": "Up", "label": "great"}'], "line 3: unknown"),
        (['{"text": "Stocks fall", "label": 0}', '{"text": "Up", "label": 1.5}'], "line 2: label 1.5"),
        (['{"text": "Stocks fall", "label": 0}', '{"text": "Up", "label": true}'], "line 2: label true"),
        (['{"text": "Stocks fall", "label": 0}', '{"text": "Up", "label": 7}'], "line 2: unknown sentiment"),
    ],
)
def test_evaluate_names_the_jsonl_line_of_a_bad_label(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[str], message: str
) -> None:
    data = tmp_path / "gold.jsonl"
    data.write_text("\n".join(lines) + "\n")
    assert main(["evaluate", "--data", str(data), "--task", "sentiment"]) == 2
    assert message in one_error_line(capsys)


def test_evaluate_reads_jsonl_integer_labels_as_written(tmp_path: Path) -> None:
    from finsent.commands.evaluate import gold_labels
    from finsent.tables import load_table

    data = tmp_path / "gold.jsonl"
    write_rows(data, [{"text": "Stocks fall", "label": 0}, {"text": "Up", "label": 1.0}, {"text": " "}])
    table = load_table(data)
    assert gold_labels(table, "label", [0, 1], "sentiment") == [
        SENTIMENT_LABELS.index("negative"),
        SENTIMENT_LABELS.index("positive"),
    ]


def test_evaluate_names_the_csv_row_of_an_empty_label(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "gold.csv"
    data.write_text("text,label\nStocks up,positive\nStocks down,\n")
    assert main(["evaluate", "--data", str(data), "--task", "sentiment"]) == 2
    assert "row 3: no label" in one_error_line(capsys)


# --- options: --max-tokens, --device, replaced columns ------------------------------------------


@pytest.mark.parametrize("command", ["classify", "evaluate"])
@pytest.mark.parametrize("value", ["0", "7", "513"])
def test_max_tokens_outside_the_model_range_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, value: str
) -> None:
    data = tmp_path / "gold.csv"
    data.write_text("text,label\n" + "Shares plunge after profit warning " * 3000 + ",negative\n")
    where = ["--input", str(data), "--output", str(tmp_path / "o.csv")]
    if command == "evaluate":
        where = ["--data", str(data), "--task", "sentiment"]
    assert main([command, *where, "--max-tokens", value]) == 2
    err = one_error_line(capsys)
    assert ("at least 8" in err) if int(value) < 8 else ("512 positions" in err)


def test_explicit_cuda_without_a_gpu_exits_2_saying_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("model.engine.cuda_problem", lambda: "the NVIDIA driver reports no GPU")
    data = tmp_path / "news.csv"
    data.write_text("text\nStocks fall\n")
    code = main(["classify", "--input", str(data), "--output", str(tmp_path / "o.csv"), "--device", "cuda"])
    assert code == 2
    assert "no usable CUDA GPU (the NVIDIA driver reports no GPU)" in one_error_line(capsys)
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.integration
def test_classify_warns_once_about_input_columns_it_replaces(tmp_path: Path) -> None:
    data = tmp_path / "news.csv"
    data.write_text("text,sentiment,topic,note\nShares plunge after profit warning,positive,Dividend,keep\n")
    out = tmp_path / "o.csv"
    result = run_cli("classify", "--input", str(data), "--output", str(out))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warnings == [
        "finsent classify: warning: input columns topic, sentiment are replaced by the scores"
    ]
    table = pd.read_csv(out)
    assert list(table.columns[:4]) == ["text", "sentiment", "topic", "note"]
    assert table.loc[0, "sentiment"] == "negative" and table.loc[0, "note"] == "keep"


def test_a_replaced_file_keeps_its_permissions_and_a_symlink_its_target(tmp_path: Path) -> None:
    from finsent.tables import replacing

    target = tmp_path / "scored.csv"
    target.write_text("old\n")
    target.chmod(0o640)
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    with replacing(link) as handle:
        handle.write("new\n")
    assert link.is_symlink() and target.read_text() == "new\n"
    assert target.stat().st_mode & 0o777 == 0o640


def test_produce_takes_each_rows_headline_else_its_text_like_the_stream(tmp_path: Path) -> None:
    from finsent.replay import load_headlines

    source = tmp_path / "mixed.jsonl"
    source.write_text(
        '{"headline": "Oil jumps on $XOM output cut", "text": "ignored"}\n'
        '{"text": "Gold slips"}\n'
        '{"headline": "", "text": "Fed holds"}\n'
        '{"headline": null}\n'
    )
    headlines = load_headlines(source)
    assert [h.text for h in headlines] == ["Oil jumps on $XOM output cut", "Gold slips", "Fed holds"]
    assert headlines[0].tickers == ("XOM",)


def test_a_trailing_comma_on_csv_rows_keeps_every_cell_in_its_column(tmp_path: Path) -> None:
    """pandas would take such a file's first column as the index: ids lost, texts in the id column."""
    path = tmp_path / "trailing.csv"
    path.write_text("id,headline\n1,Oil plunges as demand collapses,\n2,Apple beats estimates,\n")
    table = load_table(path)
    assert table.frame.to_dict("records") == [
        {"id": "1", "headline": "Oil plunges as demand collapses"},
        {"id": "2", "headline": "Apple beats estimates"},
    ]


def test_jsonl_strings_may_hold_unicode_line_separators(tmp_path: Path) -> None:
    """JSON allows U+2028, U+2029 and U+0085 raw in strings, and write_table writes them raw."""
    path = tmp_path / "separators.jsonl"
    texts = ["Stocks\u2028rally", "Oil\u2029falls", "Gold\x85steady"]
    path.write_text("".join(json.dumps({"headline": t}, ensure_ascii=False) + "\n" for t in texts))
    assert row_texts(load_table(path)) == texts


def test_evaluate_refuses_to_write_its_report_over_the_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "labelled.csv"
    data.write_text("text,label\nShares plunge,negative\n")
    assert main(["evaluate", "--data", str(data), "--task", "sentiment", "--json", str(data)]) == 2
    assert "is the --data file" in capsys.readouterr().err
    assert data.read_text() == "text,label\nShares plunge,negative\n"


def test_a_jsonl_file_may_start_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"headline": "Stocks rally"}\n')
    assert row_texts(load_table(path)) == ["Stocks rally"]


def test_jsonl_lists_objects_and_booleans_are_written_to_csv_as_json(tmp_path: Path) -> None:
    source = tmp_path / "nested.jsonl"
    record = {"headline": "Oil majors rally", "tickers": ["XOM", "CVX"], "flag": False, "meta": {"a": None}}
    source.write_text(json.dumps(record) + "\n")
    write_table(load_table(source).frame, tmp_path / "out.csv")
    (row,) = pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False).to_dict("records")
    assert json.loads(row["tickers"]) == ["XOM", "CVX"]
    assert (row["flag"], json.loads(row["meta"])) == ("false", {"a": None})


@pytest.mark.parametrize(
    "content",
    [
        "\nid,headline\n1,Stocks fall\n",  # a blank first line, which pandas skips
        "   \nid,headline\n1,Stocks fall\n",
        "id,headline\n1," + "Stocks fall on weak demand. " * 8000 + "\n",  # a 220 KB article in one cell
    ],
    ids=["blank-first-line", "whitespace-first-line", "220kb-cell"],
)
def test_csv_files_pandas_reads_are_not_refused_by_the_row_width_check(tmp_path: Path, content: str) -> None:
    path = tmp_path / "in.csv"
    path.write_text(content)
    assert len(row_texts(load_table(path))) == 1


def test_a_too_wide_row_is_numbered_as_pandas_numbers_rows(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("id,headline\n\n1,a,b\n")
    with pytest.raises(UsageError, match="row 2 has 3 cells"):
        load_table(path)


def test_jsonl_with_cr_line_ends_is_read(tmp_path: Path) -> None:
    path = tmp_path / "cr.jsonl"
    path.write_bytes(b'{"headline": "a"}\r{"headline": "b"}\r')
    assert row_texts(load_table(path)) == ["a", "b"]
