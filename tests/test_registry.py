"""The on-disk model registry: versions, atomic CURRENT pointer, rollback history, retention, CLI."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from finsent.cli import main
from model.manifest import DEFAULT_MODEL_DIR, MANIFEST_FILE, ModelIntegrityError, write_manifest
from model.registry import CURRENT_FILE, ModelRegistry, RegistryError, write_atomic


def fake_model(folder: Path, version: str) -> Path:
    """A tiny model directory with a valid manifest (hashes real, content fake)."""
    folder.mkdir(parents=True)
    (folder / "model.int8.onnx").write_bytes(f"onnx {version}".encode())
    (folder / "tokenizer.json").write_text("{}")
    write_manifest(folder, version=version, max_tokens=16, temperatures={}, training_report={}, parity={})
    return folder


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry", keep=3)


def test_init_from_imports_the_shipped_model_once(registry: ModelRegistry, tmp_path: Path) -> None:
    shipped = fake_model(tmp_path / "shipped", "v1")
    assert registry.current_version() is None
    assert registry.init_from(shipped) == "v1"
    assert registry.current_version() == "v1"
    assert (registry.root / CURRENT_FILE).read_text().strip() == "v1"
    assert registry.init_from(fake_model(tmp_path / "other", "v9")) is None
    assert [info.version for info in registry.versions()] == ["v1"]


def test_add_renames_version_and_keeps_hashes_valid(registry: ModelRegistry, tmp_path: Path) -> None:
    source = fake_model(tmp_path / "m", "v1")
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    registry.add(source, version="copy-2", checkpoint_dir=checkpoint, report={"decision": "promoted"})
    manifest = json.loads((registry.version_dir("copy-2") / MANIFEST_FILE).read_text())
    assert manifest["version"] == "copy-2"
    assert registry.checkpoint_dir("copy-2") is not None
    assert json.loads((registry.version_dir("copy-2") / "report.json").read_text()) == {
        "decision": "promoted"
    }
    with pytest.raises(RegistryError, match="already exists"):
        registry.add(source, version="copy-2")
    with pytest.raises(RegistryError, match="invalid version"):
        registry.add(source, version="../escape")
    assert registry.current_version() is None, "add never changes CURRENT"


def test_add_refuses_a_tampered_model(registry: ModelRegistry, tmp_path: Path) -> None:
    source = fake_model(tmp_path / "m", "v1")
    (source / "model.int8.onnx").write_bytes(b"tampered")
    with pytest.raises(ModelIntegrityError):
        registry.add(source)
    assert not registry.versions_dir.exists() or not any(registry.versions_dir.iterdir())


def test_promote_rollback_walks_the_history(registry: ModelRegistry, tmp_path: Path) -> None:
    for name in ("v1", "v2", "v3"):
        registry.add(fake_model(tmp_path / name, name))
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback()
    registry.promote("v1")
    registry.promote("v2")
    registry.promote("v3")
    assert registry.previous_version() == "v2"
    assert registry.rollback() == "v2"
    assert registry.current_version() == "v2"
    assert registry.rollback() == "v1"
    with pytest.raises(RegistryError):
        registry.rollback()
    registry.promote("v3")
    assert registry.previous_version() == "v1"
    with pytest.raises(RegistryError, match="no version"):
        registry.promote("v404")
    assert [event["action"] for event in registry.history()] == [
        "promote",
        "promote",
        "promote",
        "rollback",
        "rollback",
        "promote",
    ]


def test_prune_keeps_n_and_never_deletes_current_or_previous(registry: ModelRegistry, tmp_path: Path) -> None:
    registry.add(fake_model(tmp_path / "v1", "v1"))
    registry.promote("v1")
    registry.add(fake_model(tmp_path / "v2", "v2"))
    registry.promote("v2")
    for name in ("v3", "v4", "v5"):
        registry.add(fake_model(tmp_path / name, name))
    deleted = registry.prune()
    assert deleted == ["v3", "v4"]  # oldest that are neither current (v2) nor previous (v1)
    assert [info.version for info in registry.versions()] == ["v1", "v2", "v5"]
    registry.add(fake_model(tmp_path / "v6", "v6"))
    registry.promote("v6")  # now v6 current, v2 previous: v1 is the oldest unprotected one
    assert [info.version for info in registry.versions()] == ["v2", "v5", "v6"]


def test_write_atomic_replaces_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "pointer"
    write_atomic(path, "a\n")
    write_atomic(path, "b\n")
    assert path.read_text() == "b\n"
    assert [p.name for p in tmp_path.iterdir()] == ["pointer"], "no temp files left behind"


def test_retrain_request_is_written_once_and_cleared(registry: ModelRegistry) -> None:
    assert registry.pending_request() is None
    assert registry.request_retrain("topic prediction drift", {"divergence": 0.3})
    assert not registry.request_retrain("again")
    request = registry.pending_request()
    assert request is not None and request["reason"] == "topic prediction drift"
    registry.clear_request()
    assert registry.pending_request() is None


def test_model_cli_list_promote_rollback_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(tmp_path / "registry")
    shipped = str(DEFAULT_MODEL_DIR)  # `model import` loads the model, so it must be a real one
    assert main(["model", "--registry", root, "import", shipped, "--version", "v1", "--promote"]) == 0
    assert main(["model", "--registry", root, "import", shipped, "--version", "v2"]) == 0
    assert main(["model", "--registry", root, "promote", "v2"]) == 0
    capsys.readouterr()
    assert main(["model", "--registry", root, "list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].startswith("< v1") and listing[1].startswith("* v2")
    assert main(["model", "--registry", root, "rollback"]) == 0
    assert "current version: v1" in capsys.readouterr().out
    assert main(["model", "--registry", root, "promote", "nope"]) == 2
    assert "no version 'nope'" in capsys.readouterr().err
    assert main(["model", "--registry", root, "rollback"]) == 2


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The CLI's stderr, asserted to be one line (no traceback)."""
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("name", ["../../../../pwned.txt", "/tmp/pwned.txt", "sub/pwned.txt", "..", "."])
def test_manifest_file_names_must_be_plain_names(tmp_path: Path, name: str) -> None:
    source = fake_model(tmp_path / "a" / "b" / "c" / "d" / "src", "v1")
    manifest = json.loads((source / MANIFEST_FILE).read_text())
    manifest["files"][name] = manifest["files"]["tokenizer.json"]
    (source / MANIFEST_FILE).write_text(json.dumps(manifest))
    (tmp_path / "a" / "pwned.txt").write_text("{}")  # what the traversal name reaches from source
    registry = ModelRegistry(tmp_path / "r1" / "r2")
    with pytest.raises(ModelIntegrityError, match=r"manifest .*manifest\.json: field 'files'"):
        registry.add(source)
    assert not (tmp_path / "pwned.txt").exists(), "nothing written outside the registry"
    assert registry.versions() == []


@pytest.mark.parametrize("action", [["list"], ["import"], ["promote", "v1"], ["rollback"]])
def test_registry_that_is_a_file_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], action: list[str]
) -> None:
    root = tmp_path / "afile"
    root.write_text("not a registry")
    assert main(["model", "--registry", str(root), *action]) == 2
    assert f"registry {root} is not a folder" in one_line_error(capsys)


@pytest.mark.parametrize("action", [["promote", "v1"], ["rollback"]])
def test_promote_or_rollback_on_a_mistyped_registry_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], action: list[str]
) -> None:
    root = tmp_path / "regsitry"
    assert main(["model", "--registry", str(root), *action]) == 2
    assert f"registry {root}: no such folder" in one_line_error(capsys)
    assert not root.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{bad", "is not readable JSON"),
        ("[]", "must hold a JSON object"),
        ('{"versions": 5}', "'versions' must be a list"),
        ('{"history": [{"version": "../../x", "action": "promote"}]}', "'history' must be a list"),
    ],
)
@pytest.mark.parametrize("action", [["list"], ["promote", "v1"], ["rollback"]])
def test_corrupt_registry_json_is_a_one_line_error_naming_it(
    registry: ModelRegistry,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    message: str,
    action: list[str],
) -> None:
    registry.add(fake_model(tmp_path / "v1", "v1"))
    (registry.root / "registry.json").write_text(content)
    assert main(["model", "--registry", str(registry.root), *action]) == 2
    assert f"{registry.root / 'registry.json'}" in (err := one_line_error(capsys)) and message in err


def test_registry_files_get_the_mode_open_would_give(registry: ModelRegistry, tmp_path: Path) -> None:
    old_umask = os.umask(0o027)
    try:
        (tmp_path / "plain").write_text("")
        registry.add(fake_model(tmp_path / "v1", "v1"))
        registry.promote("v1")
        report = registry.write_run_report("run-1", {"decision": "rejected"})
    finally:
        os.umask(old_umask)
    expected = stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert expected == 0o640
    for path in (registry.root / CURRENT_FILE, registry.root / "registry.json", report):
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


def test_import_refuses_an_empty_version(
    registry: ModelRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(RegistryError, match="invalid version name ''"):
        registry.add(fake_model(tmp_path / "m", "v1"), version="")
    assert main(["model", "--registry", str(registry.root), "import", "--version", ""]) == 2
    assert "invalid version name ''" in one_line_error(capsys)
    assert registry.versions() == []


def test_model_help_describes_every_argument(capsys: pytest.CaptureFixture[str]) -> None:
    for action, expected in (("promote", "a registered version"), ("import", "default: the shipped model")):
        with pytest.raises(SystemExit) as exit_info:
            main(["model", action, "--help"])
        assert exit_info.value.code == 0
        assert expected in " ".join(capsys.readouterr().out.split())


def init_concurrently(root: Path) -> list[object]:
    """Two threads start on one registry at the same moment; what each init_from returned or raised."""
    barrier = threading.Barrier(2)
    results: list[object] = []

    def start() -> None:
        registry = ModelRegistry(root)
        barrier.wait()
        try:
            results.append(registry.init_from(DEFAULT_MODEL_DIR))
        except Exception as error:  # what the race used to raise: "version ... already exists"
            results.append(error)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_init_from_in_two_threads_at_once_imports_once(tmp_path: Path) -> None:
    shipped = json.loads((DEFAULT_MODEL_DIR / MANIFEST_FILE).read_text())["version"]
    for trial in range(3):
        results = init_concurrently(tmp_path / f"registry-{trial}")
        assert sorted(map(str, results)) == sorted([shipped, "None"]), results
        assert ModelRegistry(tmp_path / f"registry-{trial}").current_version() == shipped


def test_init_from_finishes_an_import_whose_promote_never_happened(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    registry.add(fake_model(tmp_path / "v1", "v1"), reason="imported shipped model")  # then the process died
    assert registry.current_version() is None
    assert registry.init_from(fake_model(tmp_path / "shipped", "v9")) == "v1"
    assert registry.current_version() == "v1"
    assert [info.version for info in registry.versions()] == ["v1"]


def test_init_from_on_a_registry_with_a_current_version_takes_no_lock(
    registry: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.init_from(fake_model(tmp_path / "v1", "v1"))

    def read_only(self: ModelRegistry) -> None:
        raise PermissionError(13, "Permission denied", str(self.root / ".lock"))

    monkeypatch.setattr(ModelRegistry, "_locked", read_only)  # a service that may only read the registry
    assert registry.init_from(fake_model(tmp_path / "v2", "v2")) is None
    assert registry.current_version() == "v1"


def test_rollback_after_a_crash_between_history_and_current_goes_to_the_real_previous(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    for name in ("v1", "v2", "v3"):
        registry.add(fake_model(tmp_path / name, name))
    registry.promote("v1")
    registry.promote("v2")
    state = json.loads((registry.root / "registry.json").read_text())
    # The history recorded "promote v3" but CURRENT was never written (the old write order).
    state["history"].append({"version": "v3", "at": "2026-01-01T00:00:00Z", "action": "promote"})
    (registry.root / "registry.json").write_text(json.dumps(state))
    assert registry.current_version() == "v2" and registry.previous_version() == "v1"
    assert registry.rollback() == "v1" and registry.current_version() == "v1"


def test_a_promote_killed_after_writing_current_still_rolls_back(
    registry: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("v1", "v2"):
        registry.add(fake_model(tmp_path / name, name))
    registry.promote("v1")

    def killed(self: ModelRegistry, state: dict[str, object]) -> None:
        raise KeyboardInterrupt("killed")

    with monkeypatch.context() as patch:
        patch.setattr(ModelRegistry, "_save_state", killed)
        with pytest.raises(KeyboardInterrupt):
            registry.promote("v2")
    # CURRENT is written first, so the history lacks the promote that did take effect.
    assert registry.current_version() == "v2" and registry.previous_version() == "v1"
    assert registry.rollback() == "v1" and registry.current_version() == "v1"


def test_a_stored_keep_applies_to_every_writer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "registry"
    ModelRegistry(root).set_keep(10)
    for index in range(1, 9):
        registry = ModelRegistry(root)
        registry.add(fake_model(tmp_path / f"v{index}", f"v{index}"))
        registry.promote(f"v{index}")
    assert main(["model", "--registry", str(root), "promote", "v7"]) == 0
    assert len(ModelRegistry(root).versions()) == 8, "finsent model keeps what retrain --keep asked for"
    ModelRegistry(root).set_keep(3)
    ModelRegistry(root).promote("v8")
    assert [info.version for info in ModelRegistry(root).versions()] == ["v6", "v7", "v8"]
    with pytest.raises(RegistryError, match="keep must be at least 2"):
        ModelRegistry(root).set_keep(1)
    state = json.loads((root / "registry.json").read_text())
    (root / "registry.json").write_text(json.dumps({**state, "keep": "all"}))
    assert main(["model", "--registry", str(root), "list"]) == 2
    assert "'keep' must be a whole number of at least 2" in one_line_error(capsys)


def test_rollback_refuses_a_previous_version_whose_files_are_damaged(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    """As promote does: rolling back to a truncated model would point CURRENT at a version no new
    replica can load, while the running ones keep serving the other."""
    for name in ("v1", "v2"):
        registry.add(fake_model(tmp_path / name, name), promote=True)
    (registry.version_dir("v1") / "model.int8.onnx").write_bytes(b"trunc")
    with pytest.raises(ModelIntegrityError, match=r"model\.int8\.onnx"):
        registry.rollback()
    assert registry.current_version() == "v2"


def test_a_version_whose_add_was_cut_short_is_registered_when_read(
    registry: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill between moving the version into versions/ and saving registry.json used to leave a
    version that list, prune and a repeated import could not see."""
    registry.add(fake_model(tmp_path / "v1", "v1"), promote=True)

    def killed(state: dict[str, Any]) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(registry, "_save_state", killed)
    with pytest.raises(KeyboardInterrupt):
        registry.add(fake_model(tmp_path / "v2", "v2"))
    reopened = ModelRegistry(registry.root)
    listed = {info.version: info for info in reopened.versions()}
    assert set(listed) == {"v1", "v2"}
    assert reopened.current_version() == "v1"
    with pytest.raises(RegistryError, match="v2 already exists"):
        reopened.add(fake_model(tmp_path / "again", "v2"))
    reopened.promote("v2")
    assert [(info.version, info.current) for info in reopened.versions()] == [("v1", False), ("v2", True)]
    saved = json.loads((registry.root / "registry.json").read_text())
    assert [entry["version"] for entry in saved["versions"]] == ["v1", "v2"]


def test_concurrent_imports_with_promote_never_prune_each_other(tmp_path: Path) -> None:
    """add(promote=True) is one lock hold: with add and promote as two, another writer's promote
    could prune the new version in between, and its own promote then failed."""
    root = tmp_path / "registry"
    ModelRegistry(root, keep=2).add(fake_model(tmp_path / "v0", "v0"), promote=True)
    errors: list[BaseException] = []

    def import_some(worker: int) -> None:
        registry = ModelRegistry(root, keep=2)
        for round_ in range(5):
            try:
                registry.add(
                    fake_model(tmp_path / f"w{worker}r{round_}", f"w{worker}r{round_}"), promote=True
                )
            except BaseException as error:
                errors.append(error)

    threads = [threading.Thread(target=import_some, args=(worker,)) for worker in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(ModelRegistry(root).versions()) == 2
