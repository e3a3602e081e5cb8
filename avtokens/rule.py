"""What every rule script shares: logging to the rule's log, thread count, clear errors."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import resource
import sys

from avtokens import AvTokensError

_M_MMAP_THRESHOLD = -3  # mallopt parameter, from glibc's malloc.h


def run_rule(snakemake, work, *args, **kwargs) -> None:
    """Call `work(*args, **kwargs)` for a Snakemake job. Log lines go to the job's log
    file and to stderr; an AvTokensError ends the job with its one-line message."""
    handlers = [logging.StreamHandler(sys.stderr)]
    if snakemake.log:
        handlers.append(logging.FileHandler(snakemake.log[0], mode="w"))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers, force=True
    )
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(max(1, snakemake.threads))
    log = logging.getLogger("avtokens")
    try:
        work(*args, **kwargs)
    except AvTokensError as err:
        log.error("%s", err)
        sys.exit(1)
    # The job's own high-water mark (ffmpeg helpers not included: a forked child's figure
    # would count its parent's pages). benchmarks/memory.py reads this line back.
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    log.info("peak memory: %.0f MiB", peak_mib)


def bound_heap_growth(threshold: int = 1 << 20) -> None:
    """Have glibc's malloc serve blocks of `threshold` bytes and more from their own memory
    maps, returned to the system when freed. By default it raises that limit each time such
    a block is freed (up to 32 MiB), after which window-sized buffers come from the heap,
    fragment it, and a job's memory grows with the length of its input (DAC decode of a
    stand-in model on CPU: 1.2 GB for a minute, 2.4 GB for ten; with this, 1.0 and 1.1, for
    more system time spent mapping fresh pages). The audio rules call it; the visual rules'
    buffers are larger and stay flat without it."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, threshold)
