"""`finsent model list|promote|rollback|import`: manage the versioned model registry."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from finsent.commands.common import Subparsers
from finsent.errors import UsageError, first_line
from model.engine import Engine
from model.manifest import DEFAULT_MODEL_DIR, ModelIntegrityError
from model.registry import ModelRegistry, RegistryError, check_version_name

REGISTRY_ENV = "FINSENT_REGISTRY"
# Scored once by `model import` to prove the candidate serves before it lands in the registry.
PROBE_TEXT = "Shares rise after quarterly earnings beat forecasts"


def register(subparsers: Subparsers) -> None:
    """Add the model subcommand and its actions."""
    parser = subparsers.add_parser(
        "model",
        help="list, promote, roll back or import model versions in the registry",
        description="A running `finsent run --registry DIR` follows the registry's current version "
        "within its poll interval (hot swap between micro-batches).",
    )
    parser.add_argument(
        "--registry", type=Path, default=None, help=f"registry folder (default: ${REGISTRY_ENV})"
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="versions, oldest first; * marks the current one, < the previous one")
    promote = actions.add_parser("promote", help="make VERSION the current version")
    promote.add_argument("version", help="a registered version (see `finsent model list`)")
    actions.add_parser("rollback", help="return to the version that was current before this one")
    imported = actions.add_parser(
        "import", help="add a model directory as a new version (current only with --promote)"
    )
    imported.add_argument(
        "model_dir",
        type=Path,
        nargs="?",
        default=DEFAULT_MODEL_DIR,
        help="model directory to import (default: the shipped model, model/default)",
    )
    imported.add_argument("--version", default=None, help="version name (default: the manifest's)")
    imported.add_argument("--promote", action="store_true", help="also make it current")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Carry out one registry action."""
    root = args.registry or (Path(os.environ[REGISTRY_ENV]) if os.environ.get(REGISTRY_ENV) else None)
    if root is None:
        raise UsageError(f"--registry (or ${REGISTRY_ENV}) is required")
    if args.action in ("promote", "rollback") and not root.exists():
        # Only an import may start a registry; a mistyped path would otherwise be created.
        raise UsageError(f"registry {root}: no such folder")
    registry = ModelRegistry(root)
    try:
        if args.action == "list":
            infos = registry.versions()
            if not infos:
                print(f"no versions in {root} (finsent model import, or finsent retrain)")
            for info in infos:
                mark = "*" if info.current else ("<" if info.previous else " ")
                metrics = " ".join(f"{k}={v:.4f}" for k, v in info.metrics.items())
                checkpoint = "checkpoint" if info.has_checkpoint else "no-checkpoint"
                print(
                    f"{mark} {info.version}  registered {info.registered_at}  {checkpoint}  {metrics}".rstrip()
                )
        elif args.action == "promote":
            registry.promote(args.version, reason="finsent model promote")
            print(f"current version: {args.version}")
        elif args.action == "rollback":
            version = registry.rollback(reason="finsent model rollback")
            print(f"rolled back; current version: {version}")
        else:
            import_version(registry, args.model_dir, args.version, args.promote)
    except (RegistryError, ModelIntegrityError, FileNotFoundError) as error:
        raise UsageError(str(error)) from None
    return 0


def import_version(registry: ModelRegistry, model_dir: Path, version: str | None, promote: bool) -> None:
    """Add model_dir as a new version once it has proved it loads and scores; optionally promote it."""
    if version is not None:
        check_version_name(version)
    check_model_serves(model_dir)
    reason = f"imported {model_dir}" + (" (finsent model import --promote)" if promote else "")
    name = registry.add(model_dir, version=version, reason=reason, promote=promote)
    print(f"imported {model_dir} as {name}" + (" (current)" if promote else ""))


def check_model_serves(model_dir: Path) -> None:
    """Raise ModelIntegrityError unless model_dir's tokenizer and CPU graph load and score one text."""
    try:
        Engine(model_dir, device="cpu", threads=1, spin=False).predict([PROBE_TEXT])
    except ModelIntegrityError:
        raise
    # tokenizers and ONNX Runtime raise bare Exception subclasses for corrupt files.
    except Exception as error:
        raise ModelIntegrityError(f"{model_dir} does not load: {first_line(error)}") from None
