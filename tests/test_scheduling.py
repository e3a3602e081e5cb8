"""Snakemake's scheduler as avtokens/scheduling.py mends it: re-picks one pending at most, only
while the rate limit holds jobs back, and a rate-limited run still finishes; each ready job's
inputs measured once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from snakemake.scheduling.job_scheduler import JobRateLimiter, JobScheduler
from snakemake.settings.types import MaxJobsPerTimespan

from avtokens import scheduling
from avtokens.workflow import REPO


def fake_scheduler(max_jobs: int, queue_input: bool = False) -> SimpleNamespace:
    limiter = JobRateLimiter(MaxJobsPerTimespan(max_jobs=max_jobs, timespan="200ms"))
    dag = SimpleNamespace(has_unfinished_queue_input_jobs=lambda: queue_input)
    return SimpleNamespace(job_rate_limiter=limiter, workflow=SimpleNamespace(dag=dag),
                           _open_jobs=threading.Semaphore(0))  # fmt: skip


def wake_ups(scheduler: SimpleNamespace, wait: float = 0.6) -> int:
    time.sleep(wait)
    count = 0
    while scheduler._open_jobs.acquire(blocking=False):
        count += 1
    return count


def test_installed_on_the_pinned_snakemake():
    assert scheduling.install()
    assert JobScheduler._schedule_reevalutation is scheduling.schedule_repick
    assert JobScheduler.update_input_sizes is scheduling.measure_new_inputs


class CountedInput:
    """An input file that counts the requests made about it."""

    def __init__(self, size: int | None):
        self._size, self.requests = size, 0

    async def exists(self) -> bool:
        self.requests += 1
        return self._size is not None

    async def size(self) -> int:
        self.requests += 1
        return self._size


def test_each_input_is_measured_once_while_its_job_waits():
    ready, later = CountedInput(10), CountedInput(None)
    scheduler = SimpleNamespace(_input_sizes={})
    first = SimpleNamespace(input=[ready, later])
    for _ in range(3):  # three picks while the job waits
        asyncio.run(scheduling.measure_new_inputs(scheduler, [first]))
    assert scheduler._input_sizes == {ready: 10, later: None}
    assert ready.requests == 2  # exists and size, once
    assert later.requests == 3  # not there yet: asked again at each pick


def test_no_repick_while_the_rate_limit_holds_nothing_back():
    scheduler = fake_scheduler(max_jobs=2)
    scheduler.job_rate_limiter.register_jobs(1)
    scheduling.schedule_repick(scheduler, 0.2)
    assert wake_ups(scheduler) == 0


def test_one_pending_repick_while_the_rate_limit_holds_jobs_back():
    scheduler = fake_scheduler(max_jobs=1)
    scheduler.job_rate_limiter.register_jobs(1)
    for _ in range(5):
        scheduling.schedule_repick(scheduler, 0.2)
    assert wake_ups(scheduler) == 1
    scheduler.job_rate_limiter.register_jobs(1)
    scheduling.schedule_repick(scheduler, 0.2)  # a new one once the last has fired
    assert wake_ups(scheduler) == 1


def test_an_earlier_wake_up_is_not_held_back_by_a_later_one():
    scheduler = fake_scheduler(max_jobs=1, queue_input=True)
    scheduling.schedule_repick(scheduler, 5.0)
    scheduling.schedule_repick(scheduler, 0.2)  # waiting for queue input, which the limit does not decide
    assert wake_ups(scheduler) == 1


def run_snakemake(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """Six one-second jobs under a Snakefile that mends its scheduler as ours does."""
    (folder / "Snakefile").write_text(
        f"import sys\nsys.path.insert(0, {str(REPO)!r})\n"
        "from avtokens import scheduling\nscheduling.install()\n"
        "rule all:\n    input: expand('done/{i}', i=range(6))\n"
        "rule job:\n    output: 'done/{i}'\n    shell: 'sleep 1; touch {output}'\n"
    )
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--verbose", *args],
                          cwd=folder, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(path.name for path in (folder / "done").iterdir()) == [str(i) for i in range(6)]
    return proc


def test_jobs_waiting_for_cores_are_picked_once_per_finished_job(tmp_path: Path):
    """Snakemake 9.27 as it is picks 22 times here (each pick measures every ready job's inputs):
    a chain of one-second re-picks starts at each finished job."""
    picks = run_snakemake(tmp_path, "--cores", "1").stderr.count("Ready jobs: ")
    assert picks <= 6 + 1, picks


def test_a_rate_limited_run_finishes(tmp_path: Path):
    """Two jobs start, finish in a second and leave four the limit holds back for two more:
    the re-pick is the only wake-up then."""
    run_snakemake(tmp_path, "--cores", "6", "--max-jobs-per-timespan", "2/3s")
