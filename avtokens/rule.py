"""What every rule script shares: logging to the rule's log, thread count, clear errors."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import resource
import sys
from pathlib import Path

from avtokens import AvTokensError
from avtokens.atomic import storage_problem
from avtokens.joblog import OnTerminal, TerminalFormat, job_failure
from avtokens.media.ffmpeg import use_job_threads

_M_MMAP_THRESHOLD = -3  # mallopt parameter, from glibc's malloc.h


class _JobLog(logging.FileHandler):
    """The job's log file, remembering whether a line could not be written (a full disk)."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        self.failed = True


def run_rule(snakemake, work, *args, **kwargs) -> None:
    """Call `work(*args, **kwargs)` for a Snakemake job. Log lines go to the job's log file,
    and warnings, errors and progress lines to stderr too (the terminal, on a local run); an
    AvTokensError, a full or read-only disk, or another fault of the machine (a device error,
    the host's memory: `shards.device_fault`) ends the job with a one-line message."""
    logging.raiseExceptions = False  # a log file on a full disk: no traceback for each line
    terminal = logging.StreamHandler(sys.stderr)
    terminal.addFilter(OnTerminal())
    terminal.setFormatter(TerminalFormat())
    handlers, job_log = [terminal], None
    for path in snakemake.log[:1]:
        try:
            job_log = _JobLog(path, mode="w")
        except OSError as err:
            print(f"{path}: cannot be written ({err.strerror}); logging to the terminal", file=sys.stderr)
        else:
            job_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            handlers.append(job_log)
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(max(1, snakemake.threads))
    use_job_threads(max(1, snakemake.threads))  # every ffmpeg of the job, as torch
    log = logging.getLogger("avtokens")
    try:
        work(*args, **kwargs)
    except AvTokensError as err:
        _fail(log, job_log, str(err))
    except Exception as err:
        from avtokens.shards import device_fault

        outputs = list(snakemake.output)
        problem = storage_problem(err, Path(outputs[0]).parent if outputs else ".")
        if problem is not None:
            _fail(log, job_log, f"{' '.join(outputs)}: cannot be written ({problem})")
        fault = device_fault(err)
        if fault is None:
            raise
        _fail(log, job_log, f"{fault}: a fault of the machine, not of the job's input")
    # The job's own high-water mark (ffmpeg helpers not included: a forked child's figure
    # would count its parent's pages). benchmarks/memory.py reads this line back.
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    log.info("peak memory: %.0f MiB", peak_mib)


def _fail(log: logging.Logger, job_log: _JobLog | None, message: str) -> None:
    """End the job with `message`: in its log, where the run's terminal reads it, and on stderr
    where no such terminal does, or where the log could not take it."""
    extra = job_failure() if job_log is not None else {}
    log.error("%s", message, extra=extra)
    if extra and job_log.failed:
        print(f"ERROR {message}", file=sys.stderr)
    sys.exit(1)


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


def run_stage(snakemake, stage) -> None:
    """Run a rule's `Stage` (avtokens.shards) for its Snakemake job: a per-video job (its
    named inputs and outputs are the one item), or a shard job (`params.shard`: the rows and
    file patterns of its videos; `input.records`: the upstream stages' records)."""
    from avtokens.shards import Item, ShardJob, run_items, shard_items
    from avtokens.storage import RunStorage

    if "shard" not in snakemake.params.keys():
        item = Item(snakemake.wildcards.video, dict(snakemake.input.items()), dict(snakemake.output.items()))
        run_rule(snakemake, run_items, stage, [item])
        return

    def run_shard():
        spec = snakemake.params.shard
        upstream = list(snakemake.input.records) if "records" in snakemake.input.keys() else []
        items, not_run = shard_items(spec["videos"], spec["inputs"], spec["outputs"], upstream)
        job = ShardJob(
            record=Path(snakemake.output.record),
            settings={k: v for k, v in snakemake.params.items() if k != "shard"},
            # an input may be a list of files (a checkpoint's)
            shared=[
                path
                for name, files in snakemake.input.items()
                if name not in ("records", "sources")
                for path in ([files] if isinstance(files, str) else files)
            ],  # fmt: skip
            not_run=not_run,
            wildcards=dict(snakemake.wildcards.items()),
            stage_name=snakemake.rule.rpartition("shard_")[2],  # also as a module's `prefix_shard_<stage>`
            storage=RunStorage.of_run(),
        )
        run_items(stage, items, job)

    run_rule(snakemake, run_shard)
