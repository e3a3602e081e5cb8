"""What every rule script shares: logging to the rule's log, thread count, clear errors."""

from __future__ import annotations

import logging
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
    try:
        work(*args, **kwargs)
    except AvTokensError as err:
        logging.getLogger("avtokens").error("%s", err)
        sys.exit(1)
