"""Debian packages installed by the tests that need them (Chromium, SLURM), as root.

The suite runs in several processes (pytest-xdist): two installs at once would meet apt's
lock, and the loser would skip its tests. A file lock makes the second wait for the first."""

from __future__ import annotations

import fcntl
import os
import subprocess
import tempfile
from pathlib import Path


def apt_install(*packages: str) -> str | None:
    """Install `packages` with apt-get; None when done, else what failed."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with open(Path(tempfile.gettempdir()) / "avtokens-tests-apt.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
            proc = subprocess.run(command, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                return f"{' '.join(command)}: {proc.stderr.strip()[-500:]}"
    return None
