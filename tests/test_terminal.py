"""The terminal of a run (avtokens/terminal.py, the logger plugin the workflow profile sets):
progress, warnings and errors; a run that fails ends in a few lines that say what to do, with
no Python frames and no Snakemake job blocks, which stay in the log it names. (A missing video:
tests/test_make_run.py, on the example's run.)"""

import logging
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import TERMINAL_NOISE, after_the_progress, make_clip, run_workflow
from snakemake_interface_logger_plugins.common import LogEvent

from avtokens.joblog import BY_JOBS, FAILURES_NAMED_BY
from avtokens.terminal import LogHandler

PRESET = {"p": {"kind": "DV", "temporal": 8, "spatial": 16, "window": 17}}


def handler(**settings) -> LogHandler:
    common = {"dryrun": False, "verbose": False, "debug_dag": False, "stdout": False, "nocolor": True,
              "quiet": set(), "printshellcmds": False, "show_failed_logs": False} | settings  # fmt: skip
    return LogHandler(SimpleNamespace(**common), None)


def record(message="", level=logging.INFO, **extra) -> logging.LogRecord:
    made = logging.LogRecord("snakemake.logging", level, __file__, 1, message, None, None)
    made.__dict__.update(extra)
    return made


def job_info(jobid, rule, **wildcards):
    return record(f"Rule: {rule}, Jobid: {jobid}", event=LogEvent.JOB_INFO, jobid=jobid, rule_name=rule,
                  wildcards=wildcards, rule_msg=None, local=True, input=[], output=[], log=[], benchmark=None,
                  reason="Missing output files", resources={}, priority=0, threads=1, indent=False,
                  is_checkpoint=False, printshellcmd=True, is_handover=False, shellcmd=None)  # fmt: skip


def job_error(jobid, rule, inputs=(), logs=()):
    return record(f"Error in rule {rule}, jobid: {jobid}", logging.ERROR, event=LogEvent.JOB_ERROR,
                  jobid=jobid, rule_name=rule, input=list(inputs), log=list(logs), output=[],
                  rule_msg=None)  # fmt: skip


def test_the_terminal_shows_progress_warnings_and_errors_and_hides_the_job_blocks():
    shown = handler()
    assert shown.lines(record("Building DAG of jobs...")) == []
    good = "Congratulations, your workflow is in a good condition!"  # `--lint`, which runs no job
    assert shown.lines(record(good)) == [good]
    assert shown.lines(record("Workflow has started!", event=LogEvent.WORKFLOW_STARTED)) == []
    assert shown.lines(record("Select jobs to execute...")) == []  # a run's other lines: its log's
    assert shown.lines(record("Job stats: ...", event=LogEvent.RUN_INFO)) == []
    assert shown.lines(job_info(3, "visual_encode", preset="p", video="v")) == []
    assert shown.lines(record("", event=LogEvent.PROGRESS, done=3, total=19)) == ["3 of 19 steps (16%) done"]
    assert shown.lines(record("waiting for the disk", logging.WARNING)) == ["waiting for the disk"]
    nothing = "Nothing to be done (all requested files are present and up to date)."
    assert shown.lines(record(nothing)) == [nothing]
    # A failed job's exception is its log's business; Snakemake's own errors are shown.
    failed = record('RuleException:\nCalledProcessError in file "Snakefile", line 5', logging.ERROR,
                    event=LogEvent.ERROR, exception="RuleException")  # fmt: skip
    assert shown.lines(failed) == []
    missing = record("MissingInputException in rule x:\nMissing input files", logging.ERROR,
                     event=LogEvent.ERROR, exception="MissingInputException")  # fmt: skip
    assert shown.lines(missing) == [missing.msg]
    # Before any job ran, a rule's exception is the workflow's, not a failed job's.
    assert handler().lines(failed) == [failed.msg]


def write_log(path: Path, *lines: str) -> Path:
    path.write_text("".join(f"2026-12-06 10:00:00,000 {line}\n" for line in lines))
    return path


def test_each_failure_is_one_line_as_it_happens_and_the_end_names_them_again(tmp_path):
    bad = "videos/bad clip.mp4"
    unreadable = f"ERROR {bad}: not a readable video (Invalid data)"
    full = "ERROR results/p/tokens/v_visual_tokens.safetensors: cannot be written (No space left on device)"
    verdict = (
        "ERROR 1 video(s) of v.tsv do not exist ... Fix their paths or remove their rows, and run again."
    )
    logs = {"encode": [unreadable], "wav": ["INFO reading", unreadable], "disk": [full], "check": [verdict]}
    for name, lines in logs.items():
        write_log(tmp_path / f"{name}.log", *lines)
    shown = handler()
    jobs = [("visual_encode", {"preset": "p", "video": "bad clip"}, [bad, "resources/m"], "encode"),
            ("extract_wav", {"rate": "44100", "video": "bad clip"}, [bad], "wav"),
            ("visual_decode", {"preset": "p", "video": "v"}, ["results/p/tokens/v.safetensors"], "disk"),
            ("stand_in_weights", {"model": "m"}, [], "none"), ("check_run", {}, [], "check")]  # fmt: skip
    for jobid, (rule, wildcards, *_) in enumerate(jobs):
        shown.lines(job_info(jobid, rule, **wildcards))
    said = [
        shown.lines(job_error(jobid, rule, inputs, [tmp_path / f"{log}.log"]))
        for jobid, (rule, _, inputs, log) in enumerate(jobs)
    ]
    assert said == [
        [f"ERROR video bad clip: {bad}: not a readable video (Invalid data). Fix or replace the file, or "
         "remove its row from the sheet, and run again"],
        [],  # the same video, for the same reason
        ["ERROR visual_decode (preset=p, video=v) failed: results/p/tokens/v_visual_tokens.safetensors: "
         "cannot be written (No space left on device)"],
        [f"ERROR stand_in_weights (model=m) failed; its log: {tmp_path / 'none.log'}"],
        [verdict],  # the run's verdict says what to do itself
    ]  # fmt: skip
    run_failed = record(
        "Exiting because a job execution failed. Look above for error messages", logging.ERROR
    )
    assert shown.lines(run_failed) == []  # the failures are the last lines already
    shown.lines(record("", event=LogEvent.PROGRESS, done=9, total=10))
    assert shown.lines(run_failed) == [line for lines in said for line in lines]  # scrolled away: again
    some_failed = record("WorkflowError:\nAt least one job did not complete successfully.", logging.ERROR,
                         event=LogEvent.ERROR, exception="WorkflowError")  # fmt: skip
    assert shown.lines(some_failed) == []
    assert shown.lines(record("Complete log(s): /w/.snakemake/log/x.snakemake.log")) == [
        "Complete log(s): /w/.snakemake/log/x.snakemake.log"
    ]


def test_a_failure_of_an_object_names_the_object_and_reads_the_log_s_local_copy(tmp_path, monkeypatch):
    """With a storage provider Snakemake names a job's files as objects ("s3://b/k (retrieve
    from storage)"); the job read and wrote local copies of them under .snakemake/storage/."""
    monkeypatch.chdir(tmp_path)
    video, log = "s3://avt-videos/in/bad.mp4", "s3://avt-results/run/results/logs/bad.extract_wav.log"
    copy = tmp_path / ".snakemake/storage/s3/avt-results/run/results/logs/bad.extract_wav.log"
    copy.parent.mkdir(parents=True)
    write_log(copy, "ERROR .snakemake/storage/s3/avt-videos/in/bad.mp4: not a readable video (Invalid data)")
    shown = handler()
    shown.lines(job_info(1, "extract_wav", rate="44100", video="bad"))
    inputs, logs = [f"{video} (retrieve from storage)"], [f"{log} (send to storage)"]
    assert shown.lines(job_error(1, "extract_wav", inputs, logs)) == [
        f"ERROR video bad: {video}: not a readable video (Invalid data). Fix or replace the file, or remove "
        "its row from the sheet, and run again"
    ]


def test_the_end_names_each_failure_once_after_the_last_progress(tmp_path):
    shown = handler()
    lines = []
    for jobid, video in enumerate(("a", "b")):
        shown.lines(job_info(jobid, "extract_wav", video=video))
        log = write_log(tmp_path / f"{video}.log", f"ERROR {video}.mp4: file is empty")
        lines += shown.lines(job_error(jobid, "extract_wav", [f"{video}.mp4"], [log]))
        if video == "a":
            shown.lines(record("", event=LogEvent.PROGRESS, done=1, total=3))
    end = shown.lines(record("Exiting because a job execution failed. Look above", logging.ERROR))
    assert end == lines[:1]  # b's line is the last one shown already; a's scrolled away


def test_where_the_jobs_say_why_they_failed_the_terminal_does_not(tmp_path, monkeypatch):
    monkeypatch.setenv(FAILURES_NAMED_BY, BY_JOBS)  # as tokenize_video runs the workflow
    shown = handler()
    shown.lines(job_info(1, "extract_wav", video="a"))
    log = write_log(tmp_path / "a.log", "ERROR a.mp4: file is empty")
    assert shown.lines(job_error(1, "extract_wav", ["a.mp4"], [log])) == []
    assert os.environ[FAILURES_NAMED_BY] == BY_JOBS


def test_the_end_names_up_to_five_failures_again(tmp_path):
    shown = handler()
    for jobid in range(8):
        shown.lines(job_info(jobid, "extract_wav", video=f"v{jobid}"))
        log = write_log(tmp_path / f"{jobid}.log", f"ERROR v{jobid}.mp4: file is empty")
        assert len(shown.lines(job_error(jobid, "extract_wav", [f"v{jobid}.mp4"], [log]))) == 1
    shown.lines(record("", event=LogEvent.PROGRESS, done=9, total=10))
    end = shown.lines(record("Exiting because a job execution failed. Look above", logging.ERROR))
    assert len(end) == 6 and end[-1] == "... and 3 more (above, and in the complete log)"
    assert end[0].startswith("ERROR video v0: v0.mp4: file is empty. Fix or replace the file")


def test_quiet_asks_for_less(capsys):
    from snakemake.settings.enums import Quietness

    progress = record("", event=LogEvent.PROGRESS, done=3, total=19)
    assert handler(quiet={Quietness.PROGRESS}).lines(progress) == []
    quiet = handler(quiet={Quietness.ALL})
    for shown in (progress, record("waiting for the disk", logging.WARNING), record("error!", logging.ERROR)):
        quiet.handle(shown)
    assert capsys.readouterr().err == "error!\n"


def test_a_dry_run_shows_the_jobs_in_full(capsys):
    shown = handler(dryrun=True)
    shown.handle(job_info(3, "visual_encode", preset="p", video="v"))
    assert "rule visual_encode:" in capsys.readouterr().err


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    make_clip(folder / "good.mp4", 32, 32, 9, rate="25")
    (folder / "broken.mp4").write_text("this is not a video\n")
    return folder


def overlay(videos: str) -> dict:
    return {"videos": videos, "weights": "demo", "presets": PRESET, "run": ["p"]}


def sheet(folder: Path, rows: dict) -> str:
    path = folder / "my videos.tsv"
    path.write_text("name\tpath\n" + "".join(f"{name}\t{file}\n" for name, file in rows.items()))
    return str(path)


@pytest.mark.workflow
def test_a_failed_video_ends_the_run_in_two_lines_naming_the_fix(tmp_path, clips):
    broken = clips / "broken.mp4"
    videos = sheet(tmp_path, {"broken": broken})
    proc = run_workflow(tmp_path / "w", overlay(videos), check=False)
    assert proc.returncode != 0
    end = after_the_progress(proc.stderr)
    reason = re.escape(f"{broken}: not a readable video (") + r"[^()]+\)"
    assert len(end) == 2 and re.fullmatch(  # one line, though two jobs read the file
        rf"ERROR video broken: {reason}\. Fix or replace the file, or remove its row from the sheet, and run "
        "again",
        end[0],
    ), proc.stderr
    assert end[-1].startswith("Complete log(s): ") and not TERMINAL_NOISE.search(proc.stderr), proc.stderr


def test_a_bad_preset_stops_the_run_in_one_line_naming_what_there_is(tmp_path, clips):
    videos = sheet(tmp_path, {"good": clips / "good.mp4"})
    bad = {"videos": videos, "presets": {"p": {"kind": "CV", "temporal": 4, "spatial": 16}}, "run": ["p"]}
    proc = run_workflow(tmp_path / "w", bad, check=False)
    assert proc.returncode != 0
    lines = [
        line for line in proc.stderr.splitlines() if not line.startswith("Using workflow specific profile")
    ]
    assert lines == [
        "ERROR config: preset 'p': no Cosmos tokenizer of release 0.1 is CV4x16x16; it has CV4x8x8, CV8x8x8, "
        "CV8x16x16, DV4x8x8, DV8x8x8, DV8x16x16"
    ], proc.stderr
