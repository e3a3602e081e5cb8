"""Two faults of Snakemake 9's job scheduler, mended for this workflow's runs: with inputs in
object storage, its requests grew with jobs times ready jobs times minutes.

Re-picks that chain. After every pick of jobs, `JobScheduler.schedule` asks for another pick one
`--max-jobs-per-timespan` timespan later (1 s by default) with a new `threading.Timer`, and the
pick that timer wakes asks for the next: every finished job starts a chain that runs until the
run ends. Each pick measures the inputs of every ready job (`update_input_sizes`: an exists and
a size request per input), so with inputs in object storage a run's requests grew with jobs times
minutes (benchmarks/object_storage.py: 141 Snakemake requests a video at 1,000 rows, against 47 at
100). A re-pick is only needed while the rate limit holds ready jobs back; a finished job wakes
the scheduler by itself. So a re-pick is asked for only then, and at most one is pending.

Inputs measured at every pick. A ready job's inputs are finished files that no job of the run
changes while it waits, so each is measured once, when its job first becomes ready.

Up to Snakemake 9.27.1, the newest release when written; a release without the method is left
alone (the test suite says so).
"""

from __future__ import annotations

import asyncio
import threading
import time

try:
    from snakemake.scheduling.job_scheduler import JobScheduler
except ImportError:  # a Snakemake that moved its scheduler
    JobScheduler = None

_pending_lock = threading.Lock()


def schedule_repick(scheduler, delay: float) -> None:
    """`JobScheduler._schedule_reevalutation`: wake the scheduler after `delay` seconds, unless
    the rate limit holds nothing back or an earlier wake-up is already pending."""
    limiter = scheduler.job_rate_limiter
    # The call after each pick asks for one timespan; a wait for queue input asks for its own.
    if (
        limiter is not None
        and delay == limiter.timespan
        and limiter.get_free_jobs() > 0
        and not scheduler.workflow.dag.has_unfinished_queue_input_jobs()
    ):
        return  # jobs left unpicked wait for cores or memory: a finished job frees them and wakes us
    due = time.monotonic() + delay
    with _pending_lock:
        pending = getattr(scheduler, "_repick_due", None)
        if pending is not None and pending <= due:
            return
        scheduler._repick_due = due

    def wake():
        with _pending_lock:
            if scheduler._repick_due == due:
                scheduler._repick_due = None
        scheduler._open_jobs.release()

    timer = threading.Timer(delay, wake)
    timer.daemon = True  # Snakemake's own timers are not, so a long timespan held its exit
    timer.start()


async def measure_new_inputs(scheduler, jobs) -> None:
    """`JobScheduler.update_input_sizes`: the size of each input of `jobs` not measured yet (None
    where it does not exist), for the job selector, which favours jobs with large inputs."""
    sizes = scheduler._input_sizes
    inputs = {path for job in jobs for path in job.input}

    async def size(path):
        return path, await path.size() if await path.exists() else None

    sizes.update(await asyncio.gather(*[size(path) for path in inputs if sizes.get(path) is None]))
    if len(sizes) > 10000:  # as Snakemake bounds it: keep the inputs of the jobs at hand
        for path in set(sizes) - inputs:
            del sizes[path]


MENDED = {"_schedule_reevalutation": schedule_repick, "update_input_sizes": measure_new_inputs}


def install() -> bool:
    """Mend the scheduler of this process; False where this Snakemake lacks either method."""
    if JobScheduler is None or not all(hasattr(JobScheduler, name) for name in MENDED):
        return False
    for name, method in MENDED.items():
        setattr(JobScheduler, name, method)
    return True
