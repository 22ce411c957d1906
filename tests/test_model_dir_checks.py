"""Tampered model directories, unsafe --ship-dir and bad export arguments: one line and exit 2, nothing lost."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from finsent.cli import main
from model.manifest import DEFAULT_MODEL_DIR, MANIFEST_FILE, ModelIntegrityError, read_manifest, sha256_file
from model.registry import CURRENT_FILE, ModelRegistry
from tests.test_registry import fake_model, one_line_error

Manifest = dict[str, Any]


def _drop(*fields: str) -> Callable[[Manifest], Any]:
    return lambda manifest: {k: v for k, v in manifest.items() if k not in fields}


def _files(change: Callable[[dict[str, str]], object]) -> Callable[[Manifest], Any]:
    def edit(manifest: Manifest) -> Manifest:
        change(manifest["files"])
        return manifest

    return edit


# (how the manifest is tampered with, the field the error must name)
TAMPERED: dict[str, tuple[Callable[[Manifest], Any], str]] = {
    "a JSON list": (lambda manifest: [manifest], "must hold a JSON object"),
    "no files": (_drop("files"), "field 'files'"),
    "no variants": (_drop("variants"), "field 'variants'"),
    "no labels": (_drop("labels"), "field 'labels'"),
    "no max_tokens": (_drop("max_tokens"), "field 'max_tokens'"),
    "temperatures a list": (lambda m: {**m, "temperatures": [1.0]}, "field 'temperatures'"),
    "tokenizer not listed": (_files(lambda files: files.pop("tokenizer.json")), "lists tokenizer.json"),
    "a path as file name": (_files(lambda files: files.update({"../x": "0" * 64})), "field 'files'"),
    "a hash that is not hex": (_files(lambda files: files.update({"model.int8.onnx": "abc"})), "SHA-256"),
    "a variant not in files": (lambda m: {**m, "variants": {"int8": "other.onnx"}}, "field 'variants'"),
}


def tampered_model(folder: Path, case: str) -> Path:
    """A fake model directory whose manifest is tampered with as TAMPERED[case] says ('invalid JSON': not JSON)."""
    fake_model(folder, "v1")
    path = folder / MANIFEST_FILE
    if case == "invalid JSON":
        path.write_text("{bad")
        return folder
    edit = TAMPERED[case][0]
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    if case == "tokenizer not listed":
        (folder / "tokenizer.json").unlink()
    return folder


CASES = ["invalid JSON", *TAMPERED]


def expected_message(case: str) -> str:
    return "is not readable JSON" if case == "invalid JSON" else TAMPERED[case][1]


@pytest.mark.parametrize("case", CASES)
def test_read_manifest_names_the_file_and_field(tmp_path: Path, case: str) -> None:
    model_dir = tampered_model(tmp_path / "model", case)
    with pytest.raises(ModelIntegrityError) as error:
        read_manifest(model_dir, verify=False)
    assert str(model_dir / MANIFEST_FILE) in str(error.value)
    assert expected_message(case) in str(error.value)


@pytest.mark.parametrize("case", CASES)
def test_classify_with_a_tampered_manifest_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    model_dir = tampered_model(tmp_path / "model", case)
    (tmp_path / "in.csv").write_text("text\nShares plunge after profit warning\n")
    argv = ["classify", "--model", str(model_dir), "--input", str(tmp_path / "in.csv")]
    assert main([*argv, "--output", str(tmp_path / "out.csv")]) == 2
    err = one_line_error(capsys)
    assert str(model_dir / MANIFEST_FILE) in err and expected_message(case) in err


def assert_import_refused(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str], message: str
) -> None:
    """`model import --promote` exits 2 with one line, and the registry gains no version and no CURRENT."""
    root = tmp_path / "registry"
    assert main(["model", "--registry", str(root), "import", str(model_dir), "--promote"]) == 2
    assert message in one_line_error(capsys)
    assert ModelRegistry(root).versions() == []
    assert not (root / CURRENT_FILE).exists()


@pytest.mark.parametrize("case", CASES)
def test_import_refuses_a_tampered_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    assert_import_refused(tmp_path, tampered_model(tmp_path / "model", case), capsys, expected_message(case))


def rehash(model_dir: Path) -> Path:
    """Make the manifest's hashes match the files again, as a careless or malicious edit would."""
    manifest = json.loads((model_dir / MANIFEST_FILE).read_text())
    manifest["files"] = {name: sha256_file(model_dir / name) for name in manifest["files"]}
    (model_dir / MANIFEST_FILE).write_text(json.dumps(manifest))
    return model_dir


def test_import_refuses_a_model_whose_files_do_not_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    garbage_graph = fake_model(tmp_path / "garbage-onnx", "v1")  # its ONNX file is a few bytes of text
    shutil.copyfile(DEFAULT_MODEL_DIR / "tokenizer.json", garbage_graph / "tokenizer.json")
    assert_import_refused(tmp_path / "a", rehash(garbage_graph), capsys, "does not load")

    corrupt_tokenizer = tmp_path / "corrupt-tokenizer"
    shutil.copytree(DEFAULT_MODEL_DIR, corrupt_tokenizer)
    (corrupt_tokenizer / "tokenizer.json").write_text("{bad")
    assert_import_refused(tmp_path / "b", rehash(corrupt_tokenizer), capsys, "does not load")


# ------------------------------------------------------------------------------------- export and ship


def victim_folder(path: Path) -> Path:
    """A folder of the user's that export must never delete."""
    (path / "sub").mkdir(parents=True)
    (path / "notes.txt").write_text("important")
    return path


def assert_untouched(victim: Path) -> None:
    assert (victim / "notes.txt").read_text() == "important" and (victim / "sub").is_dir()


def test_ship_refuses_folders_it_must_not_replace(tmp_path: Path) -> None:
    from model.ship import ShipDirError, ship

    export_dir = fake_model(tmp_path / "export", "v1")
    victim = victim_folder(tmp_path / "victim")
    model_plus_notes = fake_model(tmp_path / "model-plus-notes", "v0")
    (model_plus_notes / "notes.txt").write_text("important")
    (tmp_path / "afile").write_text("important")
    cases = {
        victim: "no manifest.json",
        model_plus_notes: "notes.txt is not a model file",
        export_dir: "overlaps the export folder",
        export_dir / "ship": "overlaps the export folder",
        tmp_path: "overlaps the export folder",
        tmp_path / "afile": "afile is not a folder",
    }
    for ship_dir, message in cases.items():
        with pytest.raises(ShipDirError, match=message):
            ship(export_dir, ship_dir, ("int8",), {})
    assert_untouched(victim)
    assert (model_plus_notes / "notes.txt").read_text() == (tmp_path / "afile").read_text() == "important"
    read_manifest(export_dir)  # the export folder is intact


def test_ship_replaces_a_model_folder_whole(tmp_path: Path) -> None:
    from model.ship import ship

    export_dir = fake_model(tmp_path / "export", "v2")
    ship_dir = fake_model(tmp_path / "shipped", "v1")
    (ship_dir / "MODEL_CARD.md").write_text("old card")
    ship(export_dir, ship_dir, ("int8",), {"dev": 1.0})
    manifest = read_manifest(ship_dir)
    assert manifest["version"] == "v2" and manifest["extra_metrics"] == {"dev": 1.0}
    # Replaced whole: the old card goes with the old model (the CLI writes a new one).
    assert sorted(p.name for p in ship_dir.iterdir()) == [MANIFEST_FILE, "model.int8.onnx", "tokenizer.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "shipped"], "no temp folders left"
    empty = tmp_path / "empty"
    empty.mkdir()
    ship(export_dir, empty, ("int8",), {})
    assert read_manifest(empty)["version"] == "v2"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{bad", "is not readable JSON"),
        ("[]", "must hold a JSON object"),
        ("{}", "'config' must be an object"),
        (
            '{"config": {"data_dir": "data", "excluded_sources": [], "dev_percent": 10, "seed": 13, '
            '"max_tokens": 32}}',
            "'temperatures' must give a number",
        ),
    ],
)
def test_export_refuses_a_malformed_training_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    pytest.importorskip("torch")
    (tmp_path / "train" / "checkpoint").mkdir(parents=True)
    (tmp_path / "train" / "training_report.json").write_text(content)
    assert main(["export", "--train-dir", str(tmp_path / "train"), "--out", str(tmp_path / "out")]) == 2
    err = one_line_error(capsys)
    assert str(tmp_path / "train" / "training_report.json") in err and message in err
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny) training run, so that the old code would get as far as exporting."""
    pytest.importorskip("torch")
    from tests.test_other_base import tiny_bert

    work = tmp_path_factory.mktemp("tiny")
    base, out = tiny_bert(work / "tiny-bert"), work / "train"
    argv = ["train", "--base", str(base), "--out", str(out), "--max-rows", "64", "--epochs", "1"]
    assert main([*argv, "--batch-size", "16", "--max-tokens", "32"]) == 0
    return out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--parity-rows", "-1"], "--parity-rows must be at least 1, got -1"),
        (["--parity-rows", "0"], "--parity-rows must be at least 1, got 0"),
        (["--version", "../../evil"], "--version: invalid version name '../../evil'"),
        (["--version", ""], "--version: invalid version name ''"),
        (["--out", "{afile}"], "afile is not a folder"),
        (["--ship-dir", "{afile}"], "afile is not a folder"),
        (["--ship-dir", "{victim}"], "not a finsent model directory"),
        (["--ship-dir", "{out}"], "overlaps the export folder"),
        (["--ship-dir", "{out}/model"], "overlaps the export folder"),
    ],
)
def test_export_checks_its_arguments_before_the_long_work(
    train_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    victim = victim_folder(tmp_path / "victim")
    (tmp_path / "afile").write_text("important")
    out = tmp_path / "out"
    names = {"afile": tmp_path / "afile", "victim": victim, "out": out}
    argv = ["export", "--train-dir", str(train_dir), "--out", str(out)]
    assert main([*argv, *(arg.format(**names) for arg in extra)]) == 2
    assert message in one_line_error(capsys)
    assert not out.exists(), "refused before exporting anything"
    assert_untouched(victim)
    assert (tmp_path / "afile").read_text() == "important"


@pytest.mark.slow
def test_export_ships_over_the_previous_model(train_dir: Path, tmp_path: Path) -> None:
    previous = fake_model(tmp_path / "shipped", "old")
    (previous / "MODEL_CARD.md").write_text("old card")
    argv = ["export", "--train-dir", str(train_dir), "--out", str(tmp_path / "out"), "--version", "v2"]
    assert main([*argv, "--ship-dir", str(previous)]) == 0
    assert read_manifest(previous)["version"] == "v2"
    assert "finsent export --train-dir" in (previous / "MODEL_CARD.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "shipped"], "no temp folders left"


def test_a_current_pointer_with_a_bad_name_stops_the_service_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "registry"
    ModelRegistry(root).add(fake_model(tmp_path / "v1", "v1"), promote=True)
    (root / CURRENT_FILE).write_text("../../etc\n")
    args = ["run", "--stage", "classify", "--registry", str(root), "--bootstrap-servers", "127.0.0.1:1"]
    assert main([*args, "--state-dir", str(tmp_path / "state")]) == 2
    assert f"registry {root}" in one_line_error(capsys)
