"""`finsent model list|promote|rollback|import`: manage the versioned model registry."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from finsent.errors import UsageError
from model.manifest import DEFAULT_MODEL_DIR, ModelIntegrityError
from model.registry import ModelRegistry, RegistryError

REGISTRY_ENV = "FINSENT_REGISTRY"


def register(subparsers: Any) -> None:
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
    actions.add_parser("list", help="versions, oldest first; * marks the current one")
    promote = actions.add_parser("promote", help="make VERSION the current version")
    promote.add_argument("version")
    actions.add_parser("rollback", help="return to the version that was current before this one")
    imported = actions.add_parser("import", help="add a model directory as a new version (not promoted)")
    imported.add_argument("model_dir", type=Path, nargs="?", default=DEFAULT_MODEL_DIR)
    imported.add_argument("--version", default=None, help="version name (default: the manifest's)")
    imported.add_argument("--promote", action="store_true", help="also make it current")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Carry out one registry action."""
    root = args.registry or (Path(os.environ[REGISTRY_ENV]) if os.environ.get(REGISTRY_ENV) else None)
    if root is None:
        raise UsageError(f"--registry (or ${REGISTRY_ENV}) is required")
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
            version = registry.add(args.model_dir, version=args.version, reason=f"imported {args.model_dir}")
            if args.promote:
                registry.promote(version, reason="finsent model import --promote")
            print(f"imported {args.model_dir} as {version}" + (" (current)" if args.promote else ""))
    except (RegistryError, ModelIntegrityError, FileNotFoundError) as error:
        raise UsageError(str(error)) from None
    return 0
