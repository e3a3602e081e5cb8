"""What every rule script shares: logging to the rule's log, thread count, clear errors."""

from __future__ import annotations

import logging
import resource
import sys

from avtokens import AvTokensError


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
