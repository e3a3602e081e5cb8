"""Outputs appear complete or not at all: write to a temporary name, rename at the end."""

from __future__ import annotations

import contextlib
import glob
import os
from pathlib import Path


@contextlib.contextmanager
def atomic_output(dest: Path | str):
    """Yield a temporary path beside `dest` (same suffix, so tools can tell the format);
    it replaces `dest` when the block succeeds and is removed when it fails."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Leftovers of a killed earlier attempt at the same output (only one job ever writes it).
    pattern = f".{glob.escape(dest.stem)}.partial-*" + (f"{glob.escape(dest.suffix)}*" if dest.suffix else "")
    for stale in dest.parent.glob(pattern):
        stale.unlink(missing_ok=True)
    tmp = dest.with_name(f".{dest.stem}.partial-{os.getpid()}{dest.suffix}")
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
