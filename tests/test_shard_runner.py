"""avtokens.shards without Snakemake: which videos a shard job redoes, how failures travel."""

import errno
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from helpers import on_small_disk

from avtokens import AvTokensError
from avtokens.shards import (
    Item,
    MachineFault,
    PerVideo,
    ShardJob,
    Stage,
    failures,
    manifest_runs,
    per_video_files,
    read_journal,
    remove_records,
    run_items,
    settle_failures,
    shard_items,
    unfinished_marker,
    unfinished_records,
)


class Copy(Stage):
    """Writes each video's input to its output; fails on the names it is told to."""

    def __init__(self, failing=(), crash=()):
        self.failing, self.crash, self.opened, self.ran, self.prepared_on = (
            set(failing),
            set(crash),
            0,
            [],
            {},
        )

    def open(self):
        self.opened += 1

    def prepare(self, item):
        self.prepared_on[item.name] = threading.current_thread().name
        return item.name

    def run(self, item, prepared):
        assert prepared == item.name
        if item.name in self.failing:
            raise AvTokensError(f"{item.inputs['source']}: not a readable video\n(second line)")
        if item.name in self.crash:
            raise ZeroDivisionError("division by zero")
        self.ran.append(item.name)
        with open(item.outputs["out"], "w") as out:
            out.write(open(item.inputs["source"]).read())


def shard(tmp_path, names, stage="copy", settings=None, **job):
    for name in names:
        source = tmp_path / f"{name}.src"
        if not source.exists():
            source.write_text(name)
    items, not_run = shard_items(
        [(name, str(tmp_path / f"{name}.src")) for name in names],
        {"source": "source"},
        {"out": str(tmp_path / "{video}.out")},
        job.pop("upstream", []),
    )
    record = tmp_path / "shards" / f"{stage}.shard.json"
    record.parent.mkdir(exist_ok=True)
    shared = job.pop("shared", [])
    return items, ShardJob(record, settings or {"window": 17}, shared, not_run, {"preset": "p"}, stage, **job)


def test_every_video_is_done_once_and_recorded(tmp_path):
    items, job = shard(tmp_path, ["a", "b", "c"])
    stage = Copy()
    run_items(stage, items, job)
    assert stage.opened == 1 and stage.ran == ["a", "b", "c"]
    record = json.loads(job.record.read_text())
    assert record["done"] == {n: {"source": str(tmp_path / f"{n}.src"), "out": str(tmp_path / f"{n}.out")}
                              for n in "abc"}  # fmt: skip
    assert record["failed"] == {} and record["not_run"] == {} and record["wildcards"] == {"preset": "p"}
    assert sorted(read_journal(job.journal)) == ["a", "b", "c"]
    # The next video is prepared on a background thread while the current one runs.
    assert all(thread != threading.current_thread().name for thread in stage.prepared_on.values())


def test_a_rerun_redoes_only_changed_or_missing_videos(tmp_path):
    items, job = shard(tmp_path, ["a", "b", "c", "d"])
    run_items(Copy(), items, job)
    (tmp_path / "b.out").unlink()  # an output gone
    (tmp_path / "c.src").write_text("c, changed")  # an input changed
    os.utime(tmp_path / "c.src", ns=(1, 1))  # (even to an older time)
    stage = Copy()
    run_items(stage, *shard(tmp_path, ["a", "b", "c", "d", "e"]))  # and a row appended
    assert stage.ran == ["b", "c", "e"]
    assert (tmp_path / "c.out").read_text() == "c, changed"
    # Other settings (a preset field) redo every video; no video to do loads no model.
    stage = Copy()
    run_items(stage, *shard(tmp_path, ["a", "b"], settings={"window": 33}))
    assert stage.ran == ["a", "b"]
    idle = Copy()
    run_items(idle, *shard(tmp_path, ["a", "b"], settings={"window": 33}))
    assert idle.ran == [] and idle.opened == 0


def test_changed_shared_files_redo_every_video(tmp_path):
    weights = tmp_path / "encoder.jit"
    weights.write_text("v1")
    run_items(Copy(), *shard(tmp_path, ["a", "b"], shared=[str(weights)]))
    stage = Copy()
    run_items(stage, *shard(tmp_path, ["a", "b"], shared=[str(weights)]))
    assert stage.ran == []
    weights.write_text("v2, a new release")
    run_items(stage, *shard(tmp_path, ["a", "b"], shared=[str(weights)]))
    assert stage.ran == ["a", "b"]


def test_a_failing_video_is_one_line_and_the_others_finish(tmp_path, caplog):
    items, job = shard(tmp_path, ["a", "bad", "c", "bug"])
    run_items(Copy(failing={"bad"}, crash={"bug"}), items, job)
    record = json.loads(job.record.read_text())
    assert sorted(record["done"]) == ["a", "c"]
    assert record["failed"] == {
        "bad": f"{tmp_path / 'bad.src'}: not a readable video (second line)",
        "bug": "ZeroDivisionError: division by zero",
    }
    errors = [
        r.getMessage()
        for r in caplog.records
        if r.levelname == "ERROR" and "failed in copy" in r.getMessage()
    ]
    assert len(errors) == 2 and all("\n" not in line for line in errors)
    assert sorted(read_journal(job.journal)) == ["a", "c"]  # the failed ones are retried next time
    rows, unfinished = failures([job.record])
    assert [(r["video"], r["stage"], r["preset"]) for r in rows] == [
        ("bad", "copy", "p"),
        ("bug", "copy", "p"),
    ]
    assert unfinished == [str(job.record)]
    # The next stage takes the videos done upstream and passes the others on, with their reason.
    later, next_job = shard(tmp_path, ["a", "bad", "c", "bug"], stage="next", upstream=[job.record])
    assert [item.name for item in later] == ["a", "c"]
    assert next_job.not_run == {
        "bad": f"copy: {record['failed']['bad']}",
        "bug": f"copy: {record['failed']['bug']}",
    }
    run_items(Copy(), later, next_job)
    rows, unfinished = failures([next_job.record])
    assert rows == [] and unfinished == [str(next_job.record)]  # reported once, where it failed


def test_the_end_of_a_run_names_each_failed_video_once_and_leaves_it_to_the_next_run(tmp_path, capsys):
    names = ["a", "bad", "c", "late"]
    items, job = shard(tmp_path, names)
    run_items(Copy(failing={"bad"}), items, job)
    later, next_job = shard(tmp_path, names, stage="next", upstream=[job.record])
    run_items(Copy(failing={"late"}, crash={"c"}), later, next_job)
    clean_items, clean_job = shard(tmp_path, ["a"], stage="clean")
    run_items(Copy(), clean_items, clean_job)
    records = [job.record, next_job.record, clean_job.record, tmp_path / "shards" / "never_ran.shard.json"]
    sources = {name: f"/videos/{name}.mp4" for name in names}
    table = tmp_path / "report" / "failed_videos.tsv"
    unreadable = "not a readable video (second line)"

    message = settle_failures(records, sources, table, shown=2)
    assert message.startswith(f"3 video(s) failed inside shard jobs, listed in {table}")
    assert table.read_text().splitlines() == [
        "video\tpath\tstage\tscope\treason",
        f"bad\t/videos/bad.mp4\tcopy\tp\t{tmp_path / 'bad.src'}: {unreadable}",
        "c\t/videos/c.mp4\tnext\tp\tZeroDivisionError: division by zero",
        f"late\t/videos/late.mp4\tnext\tp\t{tmp_path / 'late.src'}: {unreadable}",
    ]
    assert capsys.readouterr().err.splitlines() == [  # one line a video, the first `shown` of them
        f"ERROR video bad (/videos/bad.mp4): copy (p): {tmp_path / 'bad.src'}: {unreadable}",
        "ERROR video c (/videos/c.mp4): next (p): ZeroDivisionError: division by zero",
    ]
    # Both records that left a video unfinished go (the next run redoes their jobs); the clean one stays.
    assert [r.exists() for r in records[:3]] == [False, False, True]
    assert unfinished_records(records) == []  # their markers went with them
    assert settle_failures([clean_job.record], sources, tmp_path / "none.tsv") is None
    assert not (tmp_path / "none.tsv").exists()


def test_a_video_failing_at_each_rate_and_in_each_preset_is_one_line_naming_every_scope(tmp_path, capsys):
    """A broken source fails the extraction at both sample rates (two codecs) and the visual
    encode of both presets: at the end, one line for the video naming each stage with its
    scope, a row of the table for each, and every one of those jobs left to the next run."""
    names = ["a", "bad"]
    for name in names:
        (tmp_path / f"{name}.src").write_text(name)
    scopes = [("extract_wav", {"rate": "44100"}), ("extract_wav", {"rate": "24000"}),
              ("visual_encode", {"preset": "p"}), ("visual_encode", {"preset": "q"})]  # fmt: skip
    records = []
    for stage, wildcards in scopes:
        folder = tmp_path / "shards" / next(iter(wildcards.values()))
        folder.mkdir(parents=True)
        rows = [(name, str(tmp_path / f"{name}.src")) for name in names]
        items, not_run = shard_items(rows, {"source": "source"}, {"out": str(folder / "{video}.out")}, [])
        job = ShardJob(folder / f"{stage}.shard.json", {}, [], not_run, wildcards, stage)
        run_items(Copy(failing={"bad"}), items, job)
        records.append(job.record)
    sources = {name: f"/videos/{name}.mp4" for name in names}
    table = tmp_path / "failed_videos.tsv"

    assert settle_failures(records, sources, table).startswith("1 video(s) failed inside shard jobs")
    reason = f"{tmp_path / 'bad.src'}: not a readable video (second line)"
    named = "extract_wav (44100hz), extract_wav (24000hz), visual_encode (p), visual_encode (q)"
    assert capsys.readouterr().err.splitlines() == [f"ERROR video bad (/videos/bad.mp4): {named}: {reason}"]
    assert table.read_text().splitlines()[1:] == [
        f"bad\t/videos/bad.mp4\t{stage}\t{scope}\t{reason}"
        for stage, scope in [
            ("extract_wav", "44100hz"),
            ("extract_wav", "24000hz"),
            ("visual_encode", "p"),
            ("visual_encode", "q"),
        ]  # fmt: skip
    ]
    assert not any(record.exists() for record in records)


def test_a_record_that_leaves_a_video_unfinished_is_marked_until_a_rerun_finishes_it(tmp_path):
    """The markers let the start of a run find, without reading every record, the records an
    earlier run left unsettled (it ended before its last job); removing them reruns their jobs,
    which redo only the unfinished videos."""
    names = ["a", "bad"]
    items, job = shard(tmp_path, names)
    run_items(Copy(failing={"bad"}), items, job)
    later, next_job = shard(tmp_path, names, stage="next", upstream=[job.record])
    run_items(Copy(), later, next_job)  # "bad" not run: failed upstream
    clean_items, clean_job = shard(tmp_path, ["a"], stage="clean")
    run_items(Copy(), clean_items, clean_job)
    records = [job.record, next_job.record, clean_job.record, tmp_path / "shards" / "never_ran.shard.json"]
    assert unfinished_marker(job.record).read_text() == "bad\n"
    assert unfinished_records(records) == [str(job.record), str(next_job.record)]
    remove_records(unfinished_records(records))
    assert [r.exists() for r in records[:3]] == [False, False, True] and unfinished_records(records) == []
    retried = Copy()
    run_items(retried, items, job)  # "bad" is readable now
    assert retried.ran == ["bad"] and unfinished_records([job.record]) == []
    # A record rewritten with every video done has no marker left.
    run_items(Copy(failing={"a"}), *shard(tmp_path, ["a"], stage="clean", settings={"window": 9}))
    assert unfinished_records([clean_job.record]) == [str(clean_job.record)]
    run_items(Copy(), *shard(tmp_path, ["a"], stage="clean", settings={"window": 5}))
    assert unfinished_records([clean_job.record]) == []


def test_without_a_shard_job_an_error_ends_the_job(tmp_path):
    (tmp_path / "a.src").write_text("a")
    item = Item("a", {"source": str(tmp_path / "a.src")}, {"out": str(tmp_path / "a.out")})
    with pytest.raises(AvTokensError, match="not a readable video"):
        run_items(Copy(failing={"a"}), [item])
    done = []
    run_items(PerVideo(done.append), [item])
    assert done == [item]


def test_a_line_cut_short_in_the_journal_is_ignored(tmp_path):
    journal = tmp_path / "x.shard.journal"
    journal.write_text('{"video": "a", "key": "1"}\n{"video": "b", "key": "2"}\n{"video": "c", "ke')
    assert read_journal(journal) == {"a": "1", "b": "2"}


def test_aggregates_read_the_files_of_done_videos_from_records(tmp_path):
    def record(name, stage, wildcards, done):
        path = tmp_path / f"{name}.shard.json"
        path.write_text(json.dumps({"format": "avtokens-shard/1", "stage": stage, "wildcards": wildcards,
                                    "done": done, "failed": {}, "not_run": {}}))  # fmt: skip
        return path

    files = {v: {"summary": f"{v}.json", "visual_tokens": f"{v}.v", "audio_tokens": f"{v}.a"} for v in "xy"}
    summaries = record("s", "summarize", {"preset": "p", "shard": "shard00000"}, files)
    audio = record(
        "a",
        "summarize_audio",
        {"codec": "dac", "weights": "demo", "shard": "shard00000"},
        {"x": {"summary": "x.audio"}},
    )
    assert per_video_files([summaries, "plain.json"], "summary") == ["x.json", "y.json", "plain.json"]
    assert manifest_runs([summaries], [audio], {"p": "dac/demo"}) == [
        {"summary": "x.json", "visual_tokens": "x.v", "audio_tokens": "x.a", "audio_summary": "x.audio"}
    ]  # y has no audio summary: left out


class Faulty(Copy):
    """Copy, but the machine fails while it works on the video named `at`: `fault(item)` is raised."""

    def __init__(self, at, fault, in_prepare=False):
        super().__init__()
        self.at, self.fault, self.in_prepare = at, fault, in_prepare

    def prepare(self, item):
        if self.in_prepare and item.name == self.at:
            raise self.fault(item)
        return super().prepare(item)

    def run(self, item, prepared):
        if not self.in_prepare and item.name == self.at:
            raise self.fault(item)
        super().run(item, prepared)


def _full_disk(item):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), item.outputs["out"])


def _read_only(item):
    return OSError(errno.EROFS, os.strerror(errno.EROFS), item.outputs["out"])


def _device_error(item):
    return torch.AcceleratorError("CUDA error: an illegal memory access was encountered\nmore")


def _device_out_of_memory(item):
    """As avtokens.visual explains it: raised `from None` while handling torch's error."""
    err = AvTokensError(f"cuda:0: {TOO_MANY}")
    err.__context__ = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 40.00 GiB")
    err.__suppress_context__ = True
    return err


TOO_MANY = "4 windows of 17 frames at 1280x720 do not fit; lower `batch_megapixels`"


@pytest.mark.parametrize(
    "fault, in_prepare, where",
    [(_full_disk, False, "b.out: No space left on device"),
     (_read_only, True, "b.out: Read-only file system"),
     (_device_error, False, f"on {platform.node()}: CUDA error: an illegal memory access was encountered"),
     (_device_out_of_memory, False, f"on {platform.node()}: cuda:0: {TOO_MANY}")],
)  # fmt: skip
def test_a_fault_of_the_machine_stops_the_job_blames_no_video_and_the_next_run_goes_on(
    tmp_path, fault, in_prepare, where
):
    """The shard goes on after a video's own fault (test above), but a full or read-only disk
    or a failing device would fail every later video too: the job stops at once, keeps what it
    finished and records no failure; once the cause is gone the next run does the rest."""
    items, job = shard(tmp_path, ["a", "b", "c"])
    stage = Faulty("b", fault, in_prepare)
    with pytest.raises(MachineFault) as stopped:
        run_items(stage, items, job)
    message = str(stopped.value)
    assert where in message and "not of video b; the job stopped" in message and "\n" not in message
    assert stage.ran == ["a"] and not job.record.exists()  # no record: the job failed, no video did
    assert read_journal(job.journal).keys() == {"a"}
    again = Copy()
    run_items(again, items, job)
    assert again.ran == ["b", "c"] and json.loads(job.record.read_text())["failed"] == {}


def test_a_full_disk_stops_the_job_on_the_real_errno(tmp_path):
    """The same with the system's own error: outputs written onto a file system that fills up
    (a write names no file: the message names the outputs' folder, the full one)."""
    script = tmp_path / "fill.py"
    script.write_text(FILL_A_SMALL_DISK)
    disk = tmp_path / "disk"
    run = on_small_disk("64k", disk, [sys.executable, str(script), str(disk)])
    assert run["returncode"] == 0, run["stderr"]
    assert run["stdout"].splitlines() == [
        f"{disk}: No space left on device: a fault of the machine, not of video v1; the job "
        "stopped, keeping the videos it finished, and the next run goes on from there",
        "journal: v0",
    ]


# Three 40 kB outputs onto 64 kB: the first fits, the second fills the disk.
FILL_A_SMALL_DISK = """
import sys
from pathlib import Path
from avtokens.shards import Item, MachineFault, PerVideo, ShardJob, read_journal, run_items

disk = Path(sys.argv[1])
def write(item):
    with open(item.outputs["out"], "wb") as out:
        out.write(bytes(40_000))
items = [Item(f"v{i}", {}, {"out": str(disk / f"v{i}.out")}) for i in range(3)]
job = ShardJob(Path(sys.argv[0]).with_name("fill.shard.json"), {}, [], stage_name="fill")
try:
    run_items(PerVideo(write), items, job)
except MachineFault as err:
    print(err)
print("journal:", " ".join(read_journal(job.journal)))
"""


# A shard job that SLURM preempts: SIGTERM while the second video's output is half written.
PREEMPTED = """
import sys, time
from pathlib import Path
from avtokens.shards import Item, PerVideo, ShardJob, run_items

folder = Path(sys.argv[1])
def write(item):
    with open(item.outputs["out"], "w") as out:
        out.write(item.name)
        if item.name == "v1":
            out.flush()
            (folder / "half_written").touch()
            time.sleep(60)
        out.write(" done")
items = [Item(f"v{i}", {}, {"out": str(folder / f"v{i}.out")}) for i in range(3)]
run_items(PerVideo(write), items, ShardJob(folder / "job.shard.json", {}, [], stage_name="write"))
"""


def test_a_shard_job_killed_by_sigterm_resumes_without_redoing_finished_videos(tmp_path):
    script = tmp_path / "preempted.py"
    script.write_text(PREEMPTED)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)])
    deadline = time.monotonic() + 60
    while not (tmp_path / "half_written").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the job never reached v1"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM
    assert not (tmp_path / "job.shard.json").exists()  # the job did not end: no record
    assert read_journal(tmp_path / "job.shard.journal").keys() == {"v0"}

    written = []

    def write(item):
        written.append(item.name)
        with open(item.outputs["out"], "w") as out:
            out.write(f"{item.name} done")

    items = [Item(f"v{i}", {}, {"out": str(tmp_path / f"v{i}.out")}) for i in range(3)]
    run_items(PerVideo(write), items, ShardJob(tmp_path / "job.shard.json", {}, [], stage_name="write"))
    assert written == ["v1", "v2"]  # v1 again: its output was cut short, and the journal knew
    assert [(tmp_path / f"v{i}.out").read_text() for i in range(3)] == ["v0 done", "v1 done", "v2 done"]
