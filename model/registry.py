"""On-disk model registry: one folder per version, an atomic CURRENT pointer, history for rollback.

Layout under the registry root::

    CURRENT                   the serving version's name (written as temp file + os.replace)
    registry.json             versions in registration order and the pointer history
    versions/<version>/       manifest.json, ONNX file(s), tokenizer.json, MODEL_CARD.md,
                              optionally checkpoint/ (torch weights to fine-tune the next
                              challenger from) and report.json (the retrain run that made it)
    runs/<run>.json           one report per retrain run, promoted or not
    RETRAIN_REQUEST           written when drift passes its threshold; `finsent retrain` consumes it
    .lock                     serialises writers (fcntl.flock)
    retrain.lock              held by the one retrain run allowed at a time (fcntl.flock, non-blocking)

Readers (the serving watcher) only read CURRENT, so they never see a half-written state. A pointer
change writes CURRENT first and registry.json's history second; a history that misses the last
change (a kill in between) is completed from CURRENT when it is read.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model.manifest import MANIFEST_FILE, read_manifest

CURRENT_FILE = "CURRENT"
STATE_FILE = "registry.json"
REQUEST_FILE = "RETRAIN_REQUEST"
CHECKPOINT_DIR = "checkpoint"
RUN_REPORT_FILE = "report.json"
RETRAIN_LOCK_FILE = "retrain.lock"
DEFAULT_KEEP = 5
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RegistryError(RuntimeError):
    """A registry operation cannot be done (unknown version, nothing to roll back to, ...)."""


class RetrainBusy(RegistryError):
    """Another retrain run holds the registry's retrain.lock."""


class ChampionChanged(RegistryError):
    """CURRENT is no longer the champion a challenger was compared with."""


# Paths of the retrain locks this thread holds: run_once holds it around retrain(), which takes it too.
_retrain_locks_held = threading.local()


@dataclass(frozen=True)
class VersionInfo:
    """One registered version, as `finsent model list` shows it."""

    version: str
    path: Path
    registered_at: str
    current: bool
    previous: bool
    has_checkpoint: bool
    metrics: dict[str, float]


def utc_now() -> str:
    """Current UTC time, RFC 3339 with seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def check_version_name(version: str) -> str:
    """Return the version if it is a safe folder name, else raise RegistryError."""
    if not _VERSION.match(version) or version in (".", ".."):
        raise RegistryError(f"invalid version name {version!r} (letters, digits, '.', '_', '-')")
    return version


def write_atomic(path: Path, text: str) -> None:
    """Write text to path via a temp file in the same folder and os.replace (readers see old or new)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".{path.name}.{secrets.token_hex(8)}"
    # 0o666 less the umask, as open() would give: mkstemp's 0600 hid CURRENT from a service
    # running as another user on a shared volume.
    handle = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


class ModelRegistry:
    """Versioned model folders with a CURRENT pointer, rollback history and retention of N versions."""

    def __init__(self, root: Path, keep: int | None = None) -> None:
        """keep: versions to keep when pruning; None: the value stored by set_keep, else DEFAULT_KEEP."""
        self.root = Path(root)
        self._keep = None if keep is None else _checked_keep(keep)
        self.versions_dir = self.root / "versions"
        self.runs_dir = self.root / "runs"

    # ---------------------------------------------------------------- reading

    def current_version(self) -> str | None:
        """The version CURRENT points at, or None for an empty registry."""
        try:
            text = (self.root / CURRENT_FILE).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            raise self._not_a_folder() from None
        return text or None

    def version_dir(self, version: str) -> Path:
        """Folder of a version (it may not exist)."""
        return self.versions_dir / check_version_name(version)

    def current_dir(self) -> Path | None:
        """Folder of the current version, or None."""
        version = self.current_version()
        return None if version is None else self.version_dir(version)

    def has_version(self, version: str) -> bool:
        """True when the version's folder holds a manifest."""
        return (self.version_dir(version) / MANIFEST_FILE).is_file()

    def checkpoint_dir(self, version: str) -> Path | None:
        """The torch checkpoint stored with a version, when it has one."""
        path = self.version_dir(version) / CHECKPOINT_DIR
        return path if (path / "config.json").is_file() else None

    @property
    def keep(self) -> int:
        """How many versions pruning keeps: the constructor's keep, else the stored one, else DEFAULT_KEEP."""
        return self._keep if self._keep is not None else int(self._state().get("keep", DEFAULT_KEEP))

    def history(self) -> list[dict[str, str]]:
        """Pointer changes, oldest first: {version, at, action, reason}."""
        return list(self._state()["history"])

    def previous_version(self) -> str | None:
        """The version rollback would return to: the one current before the present one."""
        stack = self._stack(self._state())
        return stack[-2] if len(stack) >= 2 else None

    def versions(self) -> list[VersionInfo]:
        """Registered versions that still exist, oldest first."""
        state = self._state()
        current = self.current_version()
        previous = self.previous_version()
        infos = []
        for entry in state["versions"]:
            path = self.versions_dir / entry["version"]
            if not (path / MANIFEST_FILE).is_file():
                continue
            infos.append(
                VersionInfo(
                    version=entry["version"],
                    path=path,
                    registered_at=entry["registered_at"],
                    current=entry["version"] == current,
                    previous=entry["version"] == previous,
                    has_checkpoint=self.checkpoint_dir(entry["version"]) is not None,
                    metrics=dict(entry.get("metrics", {})),
                )
            )
        return infos

    # ---------------------------------------------------------------- writing

    def init_from(self, shipped_dir: Path) -> str | None:
        """Give an empty registry a current version (shipped_dir, imported); the version, or None if it had one.

        CURRENT is read without the lock first, so a service that may only read the registry starts.
        Versions without a CURRENT (a process died between the first add and its promote) get the
        last one promoted rather than a second import.
        """
        if self.current_version() is not None:
            return None
        with self._locked():
            if self.current_version() is not None:
                return None
            version = self._unpromoted_version()
            if version is not None:
                self._promote_locked(version, reason="CURRENT was missing: promoted the last version")
                return version
            manifest = read_manifest(Path(shipped_dir), verify=True)
            version = self._add_locked(Path(shipped_dir), manifest, reason="imported shipped model")
            self._promote_locked(version, reason=f"initial import of {shipped_dir}")
            return version

    def add(
        self,
        source_dir: Path,
        *,
        version: str | None = None,
        checkpoint_dir: Path | None = None,
        report: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        reason: str = "",
        promote: bool = False,
    ) -> str:
        """Copy a model directory in as a new version (hashes verified); version renames it.

        The copy is assembled in a hidden staging folder and moved into versions/ with one
        rename, so a reader never sees a partial version. CURRENT changes only with promote, in
        the same lock hold (another writer's prune cannot remove the new version in between).
        """
        manifest = read_manifest(Path(source_dir), verify=True)
        with self._locked():
            name = self._add_locked(
                Path(source_dir),
                manifest,
                version=version,
                checkpoint_dir=checkpoint_dir,
                report=report,
                metrics=metrics,
                reason=reason,
            )
            if promote:
                self._promote_locked(name, reason)
            return name

    def add_and_promote(
        self,
        source_dir: Path,
        *,
        champion: str,
        version: str,
        checkpoint_dir: Path | None = None,
        report: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        reason: str = "",
    ) -> str:
        """Add a version and make it current in one lock hold, if CURRENT is still champion.

        Raises ChampionChanged (and adds nothing) when another writer moved CURRENT since the
        challenger was compared with champion.
        """
        manifest = read_manifest(Path(source_dir), verify=True)
        with self._locked():
            current = self.current_version()
            if current != champion:
                raise ChampionChanged(
                    f"champion changed: compared with {champion}, but {current} is current now"
                )
            name = self._add_locked(
                Path(source_dir),
                manifest,
                version=version,
                checkpoint_dir=checkpoint_dir,
                report=report,
                metrics=metrics,
                reason=reason,
            )
            self._promote_locked(name, reason)
            return name

    def promote(self, version: str, reason: str = "") -> None:
        """Make version current (atomic pointer write) and record it for rollback; then prune."""
        with self._locked():
            self._promote_locked(version, reason)

    def rollback(self, reason: str = "") -> str:
        """Point CURRENT back at the previous version; returns it."""
        with self._locked():
            state = self._state()
            stack = self._stack(state)
            if len(stack) < 2:
                raise RegistryError("nothing to roll back to: no previous version in the history")
            target = stack[-2]
            if not self.has_version(target):
                raise RegistryError(f"previous version {target} is no longer in {self.root}")
            read_manifest(self.version_dir(target), verify=True)  # as promote does
            write_atomic(self.root / CURRENT_FILE, target + "\n")
            state["history"].append(
                {"version": target, "at": utc_now(), "action": "rollback", "reason": reason}
            )
            self._save_state(state)
            return target

    def set_keep(self, keep: int) -> None:
        """Store keep in registry.json: later prunes (retrain, `finsent model`) keep that many versions."""
        _checked_keep(keep)
        with self._locked():
            state = self._state()
            if state.get("keep") != keep:
                state["keep"] = keep
                self._save_state(state)

    def prune(self) -> list[str]:
        """Delete the oldest versions beyond keep, never the current or previous one; the deleted names."""
        with self._locked():
            return self._prune(self._state())

    def remove_stale_staging(self) -> list[str]:
        """Delete staging folders of writers that died mid-add (a live add holds the lock); their names."""
        with self._locked():
            return self._remove_staging_locked()

    @contextmanager
    def retrain_lock(self) -> Iterator[None]:
        """Hold REGISTRY/retrain.lock for one retrain run; RetrainBusy at once if another run holds it.

        Re-entrant within a thread (the CLI holds it around the Kafka drain and retrain()).
        """
        path = self.root / RETRAIN_LOCK_FILE
        held: set[Path] = _retrain_locks_held.__dict__.setdefault("paths", set())
        key = path.absolute()
        if key in held:
            yield
            return
        self._make_root()
        with path.open("a+", encoding="utf-8") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip()
                raise RetrainBusy(
                    f"another retrain run holds {path}" + (f" ({holder})" if holder else "")
                ) from None
            handle.truncate(0)
            handle.write(f"pid {os.getpid()} since {utc_now()}\n")
            handle.flush()
            held.add(key)
            try:
                yield
            finally:
                held.discard(key)
                handle.truncate(0)
                fcntl.flock(handle, fcntl.LOCK_UN)

    def write_run_report(self, run_id: str, report: dict[str, Any]) -> Path:
        """Store one retrain run's report under runs/."""
        path = self.runs_dir / f"{check_version_name(run_id)}.json"
        write_atomic(path, json.dumps(report, indent=2, default=str))
        return path

    # --------------------------------------------------------- retrain request

    def request_retrain(self, reason: str, details: dict[str, Any] | None = None) -> bool:
        """Ask the scheduled `finsent retrain` to run now; False if a request is already waiting."""
        path = self.root / REQUEST_FILE
        if path.exists():
            return False
        write_atomic(path, json.dumps({"reason": reason, "at": utc_now(), "details": details or {}}))
        return True

    def pending_request(self) -> dict[str, Any] | None:
        """The waiting retrain request, if any."""
        try:
            loaded: dict[str, Any] = json.loads((self.root / REQUEST_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:
            return {"reason": "unreadable request file"}
        return loaded

    def clear_request(self) -> None:
        """Remove the waiting retrain request."""
        (self.root / REQUEST_FILE).unlink(missing_ok=True)

    # -------------------------------------------------------------- internals

    def _add_locked(
        self,
        source_dir: Path,
        manifest: dict[str, Any],
        *,
        version: str | None = None,
        checkpoint_dir: Path | None = None,
        report: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        reason: str,
    ) -> str:
        """add() with the lock held and the source's manifest already verified."""
        name = check_version_name(str(manifest["version"]) if version is None else version)
        target = self.versions_dir / name
        if target.exists():
            raise RegistryError(f"version {name} already exists in {self.root}")
        self._remove_staging_locked()
        staging = self.root / ".staging" / f"{name}.{os.getpid()}"
        staging.mkdir(parents=True)
        try:
            for file_name in [*manifest["files"], "MODEL_CARD.md"]:
                if (source_dir / file_name).is_file():
                    shutil.copyfile(source_dir / file_name, staging / file_name)
            manifest["version"] = name
            (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
            if checkpoint_dir is not None:
                shutil.copytree(checkpoint_dir, staging / CHECKPOINT_DIR)
            if report is not None:
                (staging / RUN_REPORT_FILE).write_text(json.dumps(report, indent=2))
            read_manifest(staging, verify=True)
            self.versions_dir.mkdir(parents=True, exist_ok=True)
            os.replace(staging, target)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
        state = self._state()
        state["versions"] = [v for v in state["versions"] if v["version"] != name]
        state["versions"].append(
            {"version": name, "registered_at": utc_now(), "reason": reason, "metrics": metrics or {}}
        )
        self._save_state(state)
        return name

    def _promote_locked(self, version: str, reason: str) -> None:
        """promote() with the lock held."""
        if not self.has_version(version):
            raise RegistryError(f"no version {version!r} in {self.root}")
        read_manifest(self.version_dir(version), verify=True)
        state = self._state()
        # CURRENT first: if the process dies before the history is saved, reading reconciles it.
        write_atomic(self.root / CURRENT_FILE, version + "\n")
        state["history"].append({"version": version, "at": utc_now(), "action": "promote", "reason": reason})
        self._save_state(state)
        self._prune(state)

    def _unpromoted_version(self) -> str | None:
        """With no CURRENT: the last version in the history, else the last registered one, if it exists."""
        state = self._state()
        candidates = [event["version"] for event in state["history"][-1:]]
        candidates += [entry["version"] for entry in reversed(state["versions"])]
        return next((version for version in candidates if self.has_version(version)), None)

    def _remove_staging_locked(self) -> list[str]:
        staging = self.root / ".staging"
        names = sorted(path.name for path in staging.iterdir()) if staging.is_dir() else []
        for name in names:
            shutil.rmtree(staging / name, ignore_errors=True)
        return names

    def _reconcile(self, state: dict[str, Any]) -> dict[str, Any]:
        """Add what a kill before registry.json was saved left out: versions moved into place, and
        the last pointer change (in memory; the next write saves it)."""
        self._adopt_unregistered(state)
        current = self.current_version()
        stack = self._stack(state)
        if current is None or not _VERSION.match(current) or (stack and stack[-1] == current):
            return state
        # A version already on the stack was a rollback's target; any other one was promoted.
        action = "rollback" if current in stack else "promote"
        state["history"].append(
            {"version": current, "at": utc_now(), "action": action, "reason": "reconciled with CURRENT"}
        )
        return state

    def _adopt_unregistered(self, state: dict[str, Any]) -> None:
        """Register version folders in versions/ that registry.json does not list, oldest first.

        add() moves a verified, complete version into place and then saves registry.json; a kill
        in between left a version that list, prune and a repeated import could not see.
        """
        registered = {entry["version"] for entry in state["versions"]}
        try:
            found = [
                path
                for path in self.versions_dir.iterdir()
                if path.name not in registered
                and _VERSION.match(path.name)
                and (path / MANIFEST_FILE).is_file()
            ]
        except (FileNotFoundError, NotADirectoryError):
            return
        for path in sorted(found, key=lambda path: path.stat().st_mtime):
            state["versions"].append(
                {
                    "version": path.name,
                    "registered_at": utc_now(),
                    "reason": "recovered: in versions/ but not in registry.json (a process died adding it)",
                    "metrics": {},
                }
            )

    @staticmethod
    def _stack(state: dict[str, Any]) -> list[str]:
        """Replay the history into the stack of versions rollback walks back through."""
        stack: list[str] = []
        for event in state["history"]:
            if event["action"] == "rollback":
                while stack and stack[-1] != event["version"]:
                    stack.pop()
                if not stack:
                    stack.append(event["version"])
            elif not stack or stack[-1] != event["version"]:
                stack.append(event["version"])
        return stack

    def _prune(self, state: dict[str, Any]) -> list[str]:
        current = self.current_version()
        stack = self._stack(state)
        protected = {current, stack[-2] if len(stack) >= 2 else None}
        existing = [v["version"] for v in state["versions"] if (self.versions_dir / v["version"]).is_dir()]
        removable = [v for v in existing if v not in protected]
        deleted: list[str] = []
        keep = self._keep if self._keep is not None else int(state.get("keep", DEFAULT_KEEP))
        while len(existing) - len(deleted) > keep and removable:
            victim = removable.pop(0)
            shutil.rmtree(self.versions_dir / victim, ignore_errors=True)
            deleted.append(victim)
        if deleted:
            state["versions"] = [v for v in state["versions"] if v["version"] not in deleted]
            self._save_state(state)
        return deleted

    def _state(self) -> dict[str, Any]:
        path = self.root / STATE_FILE
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            state = {}
        except NotADirectoryError:
            raise self._not_a_folder() from None
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RegistryError(f"{path} is not readable JSON: {error}") from None
        return self._reconcile(_checked_state(state, path))

    def _not_a_folder(self) -> RegistryError:
        return RegistryError(f"registry {self.root} is not a folder")

    def _save_state(self, state: dict[str, Any]) -> None:
        write_atomic(self.root / STATE_FILE, json.dumps(state, indent=2))

    def _make_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise self._not_a_folder() from None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self._make_root()
        with (self.root / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _checked_state(state: Any, path: Path) -> dict[str, Any]:
    """registry.json's content with its lists defaulted; a RegistryError naming path if ill-formed."""
    if not isinstance(state, dict):
        raise RegistryError(f"{path} must hold a JSON object (found a {type(state).__name__})")
    state.setdefault("versions", [])
    state.setdefault("history", [])
    required = {"versions": ("version", "registered_at"), "history": ("version", "action")}
    for field, keys in required.items():
        entries = state[field]
        if not isinstance(entries, list) or not all(_entry_ok(entry, keys) for entry in entries):
            raise RegistryError(
                f"{path}: {field!r} must be a list of objects with {' and '.join(keys)} (valid version names)"
            )
    keep = state.get("keep", DEFAULT_KEEP)
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 2:
        raise RegistryError(f"{path}: 'keep' must be a whole number of at least 2, got {keep!r}")
    return state


def _checked_keep(keep: int) -> int:
    if keep < 2:
        raise RegistryError(f"keep must be at least 2 (current and previous), got {keep}")
    return keep


def _entry_ok(entry: Any, keys: tuple[str, ...]) -> bool:
    # A version name is a folder under versions/ that prune may delete: it must not lead outside.
    return (
        isinstance(entry, dict)
        and all(isinstance(entry.get(key), str) for key in keys)
        and bool(_VERSION.match(entry["version"]))
    )
