"""Outputs appear complete or not at all: write to a temporary name, rename at the end."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


@contextlib.contextmanager
def atomic_output(dest: Path | str):
    """Yield a temporary path for `dest` (same suffix, so tools can tell the format); it
    replaces `dest` when the block succeeds and is removed when it fails.

    The temporary file is in a folder of its own beside `dest`, `.<name>.partial/`, so a
    killed earlier attempt's leftover is found without listing `dest`'s folder: in a dataset
    that folder holds a file per clip, and listing it for every output made writing a clip's
    files cost time in proportion to the clips already done."""
    dest = Path(dest)
    staging = dest.with_name(f".{dest.name}.partial")
    staging.mkdir(parents=True, exist_ok=True)
    for stale in staging.iterdir():  # a killed earlier attempt's (only one job writes `dest`)
        stale.unlink(missing_ok=True)
    tmp = staging / f"{dest.stem}.{os.getpid()}{dest.suffix}"
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: a concurrent writer's file, theirs to remove
            staging.rmdir()
