"""Shipping an export: copy the chosen variants into a model directory, swapped in whole."""

from __future__ import annotations

import json
import secrets
import shutil
from pathlib import Path
from typing import Any

from model.card import CARD_FILE, write_card
from model.manifest import MANIFEST_FILE, VARIANT_FILES, ModelIntegrityError, read_manifest, write_manifest
from model.tokenization import TOKENIZER_FILE


class ShipDirError(ValueError):
    """The ship folder is not one export may replace (not empty and not a model directory, or overlapping)."""


def check_ship_dir(ship_dir: Path, export_dir: Path) -> None:
    """Raise ShipDirError unless ship_dir is absent, empty or a finsent model directory, apart from export_dir."""
    ship, out = ship_dir.resolve(), export_dir.resolve()
    if ship.is_relative_to(out) or out.is_relative_to(ship):
        raise ShipDirError(f"ship folder {ship_dir} overlaps the export folder {export_dir}; pick another")
    if ship_dir.is_symlink():
        raise ShipDirError(f"ship folder {ship_dir} is a symbolic link; give the folder it points to")
    existing = next((p for p in (ship_dir, *ship_dir.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ShipDirError(f"ship folder {ship_dir}: {existing} is not a folder")
    if ship_dir.is_dir() and any(ship_dir.iterdir()):
        stray = _stray_entry(ship_dir)
        if stray is not None:
            raise ShipDirError(
                f"ship folder {ship_dir} is not empty and not a finsent model directory ({stray}); "
                "refusing to replace it"
            )


def _stray_entry(model_dir: Path) -> str | None:
    """Why model_dir is not purely a finsent model directory, or None when it is."""
    if not (model_dir / MANIFEST_FILE).is_file():
        return f"no {MANIFEST_FILE}"
    try:
        manifest = read_manifest(model_dir, verify=False)
    except ModelIntegrityError as error:
        return str(error)
    known = {MANIFEST_FILE, CARD_FILE, *manifest["files"], *manifest["variants"].values()}
    for entry in sorted(model_dir.iterdir()):
        if entry.name not in known or entry.is_dir():
            return f"{entry.name} is not a model file"
    return None


def ship(
    export_dir: Path,
    ship_dir: Path,
    variants: tuple[str, ...],
    extra_metrics: dict[str, Any],
    card_command: str | None = None,
) -> dict[str, Any]:
    """Write the chosen variants, the tokenizer, a fresh manifest (and a card) into ship_dir at once.

    ship_dir must be absent, empty or a finsent model directory (check_ship_dir); the new folder is
    assembled beside it and swapped in with renames, so a failure leaves the old one in place.
    """
    check_ship_dir(ship_dir, export_dir)
    manifest = read_manifest(export_dir, verify=False)
    ship_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = ship_dir.parent / f".{ship_dir.name}.{secrets.token_hex(4)}.new"
    staging.mkdir()  # mode 0o777 less the umask, like the folder it replaces
    try:
        for variant in variants:
            shutil.copyfile(export_dir / VARIANT_FILES[variant], staging / VARIANT_FILES[variant])
        shutil.copyfile(export_dir / TOKENIZER_FILE, staging / TOKENIZER_FILE)
        shipped = write_manifest(
            staging,
            version=manifest["version"],
            max_tokens=manifest["max_tokens"],
            temperatures=manifest["temperatures"],
            training_report=manifest["training"],
            parity=manifest["parity"],
            max_positions=manifest.get("max_positions"),
        )
        shipped["extra_metrics"] = extra_metrics
        (staging / MANIFEST_FILE).write_text(json.dumps(shipped, indent=2))
        if card_command is not None:
            write_card(staging, shipped, card_command)
        _swap_in(staging, ship_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return shipped


def _swap_in(new_dir: Path, ship_dir: Path) -> None:
    """Put new_dir where ship_dir is; the old folder is moved aside first and deleted last."""
    if not ship_dir.exists():
        new_dir.rename(ship_dir)
        return
    old_dir = ship_dir.parent / f".{ship_dir.name}.{secrets.token_hex(4)}.old"
    ship_dir.rename(old_dir)
    try:
        new_dir.rename(ship_dir)
    except BaseException:
        old_dir.rename(ship_dir)
        raise
    shutil.rmtree(old_dir)
