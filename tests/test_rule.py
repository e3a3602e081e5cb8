"""What a rule's script says where: every line in the job's log; warnings, errors and progress
on the terminal too, but not the line a job fails with when the run's terminal (the logger
plugin) names failures itself from the log, unless the log could not take it."""

import os
import platform
import subprocess
import sys

import pytest
from helpers import REPO

from avtokens.joblog import BY_TERMINAL, FAILURES_NAMED_BY

JOB = """
import logging, sys, types
from avtokens import AvTokensError
from avtokens.rule import run_rule

def work():
    log = logging.getLogger("avtokens.work")
    log.info("reading clip.mp4")
    log.warning("clip.mp4 has no audio: silence")
    raise AvTokensError("clip.mp4: not a readable video (Invalid data)")

run_rule(types.SimpleNamespace(log=[sys.argv[1]], threads=1, output=["out.json"]), work)
"""


def job(log, named_on_terminal: bool) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != FAILURES_NAMED_BY}
    env |= {FAILURES_NAMED_BY: BY_TERMINAL} if named_on_terminal else {}
    return subprocess.run(
        [sys.executable, "-c", JOB, str(log)], capture_output=True, text=True, env=env, cwd=REPO
    )


@pytest.mark.parametrize("named_on_terminal", [False, True])
def test_the_log_has_every_line_and_the_terminal_the_warnings_and_the_failure_once(
    tmp_path, named_on_terminal
):
    proc = job(tmp_path / "job.log", named_on_terminal)
    assert proc.returncode == 1
    log = [line.split(" ", 2)[2] for line in (tmp_path / "job.log").read_text().splitlines()]
    assert log == ["INFO reading clip.mp4", "WARNING clip.mp4 has no audio: silence",
                   "ERROR clip.mp4: not a readable video (Invalid data)"]  # fmt: skip
    failure = [] if named_on_terminal else ["ERROR clip.mp4: not a readable video (Invalid data)"]
    assert proc.stderr.splitlines() == ["WARNING clip.mp4 has no audio: silence", *failure]


def test_a_failure_the_log_cannot_take_goes_to_the_terminal():
    proc = job("/dev/full", named_on_terminal=True)  # every write: No space left on device
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "WARNING clip.mp4 has no audio: silence",
        "ERROR clip.mp4: not a readable video (Invalid data)",
    ]


DEVICE_FAULT = """
import sys, types
import torch
from avtokens.rule import run_rule

def work():
    raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered\\nmore lines")

run_rule(types.SimpleNamespace(log=[sys.argv[1]], threads=1, output=["out.json"]), work)
"""


def test_a_fault_of_the_device_ends_the_job_in_one_line_blaming_no_input(tmp_path):
    command = [sys.executable, "-c", DEVICE_FAULT, str(tmp_path / "job.log")]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert (tmp_path / "job.log").read_text().split(" ", 2)[2] == (
        f"ERROR the device on {platform.node()}: CUDA error: an illegal memory access was encountered: "
        "a fault of the machine, not of the job's input\n"
    )


STAGE_JOB = """
import sys, types
from avtokens.media.ffmpeg import decoding_threads
from avtokens.rule import run_stage
from avtokens.shards import Stage

class Said(Stage):
    def run(self, item, prepared):
        print(item.name, "with an ffmpeg told no count:", *decoding_threads())

clip = types.SimpleNamespace(video="clip")
job = types.SimpleNamespace(log=[sys.argv[1]], threads=3, params={}, wildcards=clip, input={}, output={})
run_stage(job, Said())
"""


def test_a_stage_runs_its_ffmpeg_on_the_jobs_thread_count(tmp_path):
    proc = subprocess.run([sys.executable, "-c", STAGE_JOB, str(tmp_path / "job.log")], capture_output=True,
                          text=True, cwd=REPO)  # fmt: skip
    # An ffmpeg of the job that is given no count (a rule script's function) gets the job's.
    said = "clip with an ffmpeg told no count: -filter_threads 3 -threads 3\n"
    assert proc.returncode == 0 and proc.stdout == said
