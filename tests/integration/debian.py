"""Find (or install from Debian's packages) the real Prometheus and Alertmanager binaries for tests."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

_UPDATED = False
# apt-get refuses to run twice at once, and parallel test workers (pytest-xdist) are separate
# processes. The file lock also serialises threads: each open() is its own lock holder.
_APT_LOCK_FILE = Path(tempfile.gettempdir()) / "finsent-tests-apt.lock"

# binary name -> Debian package that ships it
PACKAGES = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "alertmanager": "prometheus-alertmanager",
    "amtool": "prometheus-alertmanager",
}


def _find(binary: str) -> str | None:
    found = shutil.which(binary)
    if found:
        return found
    candidate = Path("/usr/bin") / binary
    return str(candidate) if candidate.is_file() else None


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        ["apt-get", *args], capture_output=True, text=True, env=env, timeout=900, check=False
    )


def require_binary(binary: str) -> str:
    """Path of a Debian-packaged binary, installing its package (as root) when missing.

    Skips the test with a loud reason only when the package truly cannot be installed here.
    """
    found = _find(binary)
    if found:
        return found
    with _APT_LOCK_FILE.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _install(binary)


def _install(binary: str) -> str:
    """apt-get install the package that ships binary; call with the apt lock held."""
    global _UPDATED
    found = _find(binary)  # another worker may have installed it while this one waited for the lock
    if found:
        return found
    package = PACKAGES[binary]
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(
            f"SKIPPED LOUDLY: {binary} missing and cannot install Debian package {package} (not root / no apt-get)"
        )
    if not _UPDATED:
        _apt("update")
        _UPDATED = True
    result = _apt("install", "-y", "--no-install-recommends", package)
    found = _find(binary)
    if result.returncode != 0 or not found:
        pytest.skip(
            f"SKIPPED LOUDLY: apt-get install {package} failed (exit {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()[-400:]}"
        )
    # Debian starts the packaged daemons as services where an init system runs; tests start their own.
    for service in ("prometheus", "prometheus-alertmanager", "prometheus-node-exporter"):
        subprocess.run(["service", service, "stop"], capture_output=True, check=False)
    return found
