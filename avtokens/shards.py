"""Shard mode: one job runs a stage over a shard of videos, loading its model once.

Every rule script hands its work to `run_items` as one `Item` per video (its named input
and output files), so a per-video job is simply a shard of one. In shard mode (`shard_size`
> 0) Snakemake sees one record per shard and stage instead of the per-video files, which
keeps the DAG small for 100,000 clips; the per-video outputs are the same files.

What Snakemake no longer sees per video is kept here:
- the record (the job's output, JSON) lists the videos done, with their files, and the
  videos that failed, each with its one-line reason. The next stage takes the videos done
  in all of its upstream records; the others are passed on as not run.
- the journal (beside the record, not a Snakemake output, so it outlives a rerun) holds a
  key per finished video: its stage settings and the size and time of its input files. A
  rerun of the shard (its rows, a preset field, or an input changed; or a failure to retry)
  skips the videos whose key is unchanged and whose outputs exist, and redoes only the rest.
- when the run's files are objects (Snakemake's default storage provider), a shard job
  fetches its videos' files and puts what it makes itself (avtokens.storage.RunStorage), and
  its journal and marker are objects beside its record.
- a record that leaves a video unfinished (failed in its stage or upstream) has a marker
  beside it. The run's last job (`settle_failures`) reports those videos and removes such
  records, so that the next run retries them; a run that ended before its last job left
  them, and the next run removes them as it starts (`unfinished_records`), finding them by
  their markers (a look for one file per record: reading 2,000 records of 1,000 videos would
  slow every run's planning).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from avtokens import AvTokensError
from avtokens.atomic import atomic_output, error_chain, storage_problem
from avtokens.background import prefetched
from avtokens.storage import RunStorage, as_declared, fetch_object, is_url, local_copy, object_identity

log = logging.getLogger(__name__)
RECORD_FORMAT = "avtokens-shard/1"
RECORD_SUFFIX = ".shard.json"


@dataclass
class Item:
    """One video's files for one stage: name -> path of its inputs and outputs; `sources`: the
    inputs that are the sheet's file of the video (a local file or an object's URL), not a file
    of the run."""

    name: str
    inputs: dict[str, str]
    outputs: dict[str, str]
    sources: tuple[str, ...] = ()


class Stage:
    """A rule's work, one video at a time. `open` loads what the videos share (a model), once,
    before the first video that has work to do; `prepare` runs one video ahead on a background
    thread (probing it, starting to read it) while `run` keeps the model busy with the
    current one."""

    def open(self) -> None:
        pass

    def prepare(self, item: Item):
        return None

    def run(self, item: Item, prepared) -> None:
        raise NotImplementedError


class PerVideo(Stage):
    """A stage without a shared model: `work(item)` per video."""

    def __init__(self, work: Callable[[Item], None]):
        self.work = work

    def run(self, item: Item, prepared) -> None:
        self.work(item)


@dataclass
class ShardJob:
    """What a shard job knows beyond its items: where its record and journal go, what decides
    its outputs (`settings`: the rule's params; `shared`: files every video uses, such as
    weights), and the videos upstream stages did not finish (name -> reason)."""

    record: Path
    settings: dict
    shared: list[str]
    not_run: dict[str, str] = field(default_factory=dict)
    wildcards: dict[str, str] = field(default_factory=dict)
    stage_name: str = ""
    storage: RunStorage | None = None  # the run's files are objects there (avtokens.storage)

    @property
    def journal(self) -> Path:
        return self.record.with_suffix(".journal")


def unfinished_marker(record: Path | str) -> Path:
    """The file beside a shard record that says it left a video unfinished."""
    return Path(record).with_suffix(".unfinished")


def _identity(path: str, storage: RunStorage | None = None) -> list:
    """What a file is, to tell when it changed: a local file's size and modification time; an
    object's size and ETag (a URL, a local copy of one, or with `storage` a file of the run),
    which do not depend on when a copy of it was made."""
    if is_url(path):
        return object_identity(path)
    if storage is None and as_declared(path) != path:  # a local copy of one of the run's objects
        storage = RunStorage.of_run()
    if storage is not None:
        return storage.identity(path)
    try:
        st = os.stat(path)
    except OSError:
        return [path, None, None]
    return [path, st.st_size, st.st_mtime_ns]


def files_state(paths: Iterable[str], known: Mapping[str, list] | None = None) -> str:
    """A digest of the files' sizes and modification times (or objects' sizes and ETags, from
    `known` where it has them): it changes when one of them does."""
    identities = [(known or {}).get(p) or _identity(p) for p in paths]
    return hashlib.sha256(json.dumps(identities).encode()).hexdigest()


def video_key(item: Item, shared: str, storage: RunStorage | None = None) -> str:
    """What a video's outputs were made from: what the job shares (`job_state`) and the
    video's own input files (size and modification time, as Snakemake judges staleness; an
    object's size and ETag)."""
    inputs = sorted(
        (name, _identity(path, None if name in item.sources else storage))
        for name, path in item.inputs.items()
    )
    return hashlib.sha256(json.dumps([shared, inputs]).encode()).hexdigest()


def job_state(job: ShardJob) -> str:
    """A digest of what every video of the job shares: the stage settings and the shared
    files (weights), by size and modification time."""
    settings = json.dumps(job.settings, sort_keys=True, default=str)
    return hashlib.sha256(f"{settings}\n{files_state(sorted(job.shared))}".encode()).hexdigest()


def read_journal(path: Path) -> dict[str, str]:
    """video -> key of its last finished run (a line cut short by a killed job is ignored)."""
    keys = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
                keys[entry["video"]] = entry["key"]
            except (ValueError, KeyError, TypeError):
                continue
    return keys


def run_items(stage: Stage, items: list[Item], job: ShardJob | None = None) -> None:
    """Run `stage` over `items`. Without `job` (a per-video job) an error ends the job. With
    it, a video that fails is logged in one line and recorded, the others go on, and videos
    finished before with the same key are not redone. A fault of the machine (`machine_fault`)
    is no video's: it stops the job at once (`MachineFault`), blaming no video, and the
    journal keeps the videos finished before it, so the run after the cause is gone goes on
    from there."""
    if job is None:
        stage.open()
        for item in items:
            stage.run(item, stage.prepare(item))
        return
    stored = job.storage
    if stored is not None:
        with contextlib.suppress(AvTokensError):  # no journal yet
            stored.fetch(job.journal)
    known = read_journal(job.journal)
    shared = job_state(job)
    keys = {item.name: video_key(item, shared, stored) for item in items}
    made = stored.exists if stored is not None else os.path.exists
    todo = [
        item
        for item in items
        if known.get(item.name) != keys[item.name] or not all(map(made, item.outputs.values()))
    ]
    failed: dict[str, str] = {}
    started = time.monotonic()
    log.info("%s: %d videos, %d to do, %d done before, %d not run (failed upstream)",
             job.stage_name, len(items), len(todo), len(items) - len(todo), len(job.not_run))  # fmt: skip
    try:
        if todo:
            stage.open()
            with open(job.journal, "a", encoding="utf-8") as journal:
                prepare = functools.partial(_prepare, stage, storage=stored)
                for item, prepared, error in prefetched(todo, prepare, depth=1):
                    if error is None:
                        error = _attempt(stage, item, prepared, stored)
                    if error is None:
                        journal.write(json.dumps({"video": item.name, "key": keys[item.name]}) + "\n")
                        journal.flush()
                    else:
                        failed[item.name] = error
                        log.error("video %s failed in %s: %s", item.name, job.stage_name, error)
    finally:
        if stored is not None and os.path.exists(job.journal):  # also when a fault stops the job
            stored.store(job.journal)
    done = {i.name: {**i.inputs, **i.outputs} for i in items if i.name not in failed}
    write_record(job, done, failed)
    log.info("%s: %d made, %d failed, %.1f s", job.stage_name, len(todo) - len(failed), len(failed),
             time.monotonic() - started)  # fmt: skip


def staged(item: Item, storage: RunStorage | None) -> Item:
    """`item` with the files a stage can open: its sources that are objects fetched to local
    copies, and with `storage` its other inputs too, and its outputs' local copies to write."""
    inputs = dict(item.inputs)
    for name in item.sources:
        if is_url(inputs[name]):
            inputs[name] = fetch_object(inputs[name], local_copy(inputs[name]))
        elif storage is not None and not os.path.exists(inputs[name]):  # made by the run (the example)
            inputs[name] = storage.fetch(inputs[name])
    if storage is None:
        return Item(item.name, inputs, item.outputs, item.sources)
    inputs |= {name: storage.fetch(path) for name, path in item.inputs.items() if name not in item.sources}
    outputs = {name: storage.local(path) for name, path in item.outputs.items()}
    for path in outputs.values():
        os.makedirs(os.path.dirname(path), exist_ok=True)
    return Item(item.name, inputs, outputs, item.sources)


def _reason(err: BaseException) -> str:
    text = str(err) if isinstance(err, AvTokensError) else f"{type(err).__name__}: {err}"
    return " ".join(text.split())  # one line


class MachineFault(AvTokensError):
    """A fault of the machine met while working on a video: the job stops (see `run_items`)."""


def machine_fault(err: BaseException, folder: Path | str) -> str | None:
    """ "<path or device>: <cause>" when `err`, or an error it was raised from, is a fault of
    the machine rather than of the video being worked on; else None. Told by the exception's
    type and errno, not its text: the storage under `folder` (full, read-only, not writable,
    an I/O error: `atomic.storage_problem`), or the device or the host (`device_fault`)."""
    problem = storage_problem(err, folder)
    if problem is None:
        return device_fault(err)
    path = next((e.filename for e in error_chain(err) if isinstance(e, OSError) and e.filename), folder)
    return f"{path}: {problem}"


def device_fault(err: BaseException) -> str | None:
    """ "the device on <host>: <cause>" for a device error (`torch.AcceleratorError`: a CUDA
    error leaves the context failing every later call) or the device out of memory (every
    later video of that size would be too, and so would a retry of this one at the same
    settings; `err`'s own words name the setting to lower), "the host <host>: ..." for its
    memory exhausted (`MemoryError`), else None; in `err` or an error it was raised from. The
    host is named for a cluster's operator, who may keep the next jobs off it."""
    torch = sys.modules.get("torch")
    for cause in error_chain(err):
        if torch is not None and isinstance(cause, (torch.AcceleratorError, torch.OutOfMemoryError)):
            said = err if isinstance(err, AvTokensError) else cause
            first = (str(said).strip().splitlines() or [type(cause).__name__])[0]
            return f"the device on {platform.node()}: {first}"
        if isinstance(cause, MemoryError):
            return f"the host {platform.node()}: out of memory (MemoryError)"
    return None


def _video_fault(err: Exception, item: Item, failed: str) -> str:
    """The one-line reason a video failed; raises `MachineFault` when the machine did."""
    folder = Path(next(iter(item.outputs.values()), ".")).parent
    fault = machine_fault(err, folder)
    if fault is not None:
        raise MachineFault(
            f"{fault}: a fault of the machine, not of video {item.name}; the job stopped, "
            "keeping the videos it finished, and the next run goes on from there"
        ) from err
    if not isinstance(err, AvTokensError):
        log.exception("video %s: %s", item.name, failed)
    return _reason(err)


def _prepare(stage: Stage, item: Item, storage: RunStorage | None):
    try:
        local = staged(item, storage)
        return item, (local, stage.prepare(local)), None
    except Exception as err:  # reported for this video; the shard goes on
        return item, None, _video_fault(err, item, "preparing failed")


def _attempt(stage: Stage, item: Item, prepared, storage: RunStorage | None) -> str | None:
    """Run the stage on the video's local files; with `storage`, put its outputs in their objects."""
    local, prepared = prepared
    try:
        stage.run(local, prepared)
        if storage is not None:
            for path in item.outputs.values():
                storage.store(path)
    except Exception as err:  # reported for this video; the shard goes on
        return _video_fault(err, item, "failed")
    return None


def write_record(job: ShardJob, done: dict[str, dict], failed: dict[str, str]) -> None:
    record = {
        "format": RECORD_FORMAT,
        "stage": job.stage_name,
        "wildcards": job.wildcards,
        "done": done,
        "failed": failed,  # in this stage
        "not_run": job.not_run,  # failed upstream
    }
    # The marker is there whenever its record leaves a video unfinished: made before the
    # record, removed after it (a job killed in between leaves a marker at worst, which only
    # makes the next run rerun the job, redoing no finished video).
    marker = unfinished_marker(job.record)
    if failed or job.not_run:
        with atomic_output(marker) as tmp:
            tmp.write_text("".join(f"{name}\n" for name in [*failed, *job.not_run]), encoding="utf-8")
        if job.storage is not None:
            job.storage.store(str(marker))
    with atomic_output(job.record) as tmp:
        tmp.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    if not (failed or job.not_run):
        marker.unlink(missing_ok=True)
        if job.storage is not None:
            job.storage.remove(str(marker))


def read_record(path) -> dict:
    record = json.loads(Path(path).read_text(encoding="utf-8"))
    if record.get("format") != RECORD_FORMAT:
        raise AvTokensError(f"{path}: not a shard record ({RECORD_FORMAT})")
    return record


def shard_items(videos: Iterable[tuple[str, str]], inputs: dict[str, str], outputs: dict[str, str],
                upstream: list) -> tuple[list[Item], dict[str, str]]:  # fmt: skip
    """The items of a shard's stage: for each (name, source) row, the patterns of `inputs`
    and `outputs` with `{video}` filled in (`source` stands for the row's file), keeping
    the videos done in every upstream record. Returns them and the others, with reasons."""
    records = [read_record(path) for path in upstream]
    not_run = {}
    for record in records:
        for name, reason in {**record["not_run"], **record["failed"]}.items():
            not_run.setdefault(name, reason if name in record["not_run"] else f"{record['stage']}: {reason}")
    items = []
    for name, source in videos:
        if name in not_run:
            continue
        if not all(name in record["done"] for record in records):
            not_run[name] = "not made upstream"
            continue
        files = {key: source if pattern == "source" else fill_pattern(pattern, {"video": name})
                 for key, pattern in {**inputs, **outputs}.items()}  # fmt: skip
        items.append(Item(name, {key: files[key] for key in inputs}, {key: files[key] for key in outputs},
                          tuple(key for key, pattern in inputs.items() if pattern == "source")))  # fmt: skip
    return items, not_run


def fill_pattern(pattern: str, values: dict[str, str]) -> str:
    """`pattern` with the named `{fields}` replaced by their values, other fields left."""
    for key, value in values.items():
        pattern = pattern.replace("{" + key + "}", value)
    return pattern


def per_video_files(paths: Iterable, key: str) -> list[str]:
    """`paths` themselves, except that a shard record (shard mode) stands for the file `key`
    of each video done in it, in record order (`local_files`: where the job can open them)."""
    files = []
    for path in map(str, paths):
        if path.endswith(RECORD_SUFFIX):
            files += local_files([done[key] for done in read_record(path)["done"].values()])
        else:
            files.append(path)
    return files


def local_files(paths: list[str]) -> list[str]:
    """The files a shard record lists, where a job can open them: themselves, or when the run's
    files are objects (avtokens.storage.RunStorage) their local copies, fetched."""
    storage = RunStorage.of_run()
    return paths if storage is None else [storage.fetch(path) for path in paths]


def manifest_runs(summary_records: Iterable, audio_records: Iterable, audio_of: dict) -> list[dict]:
    """The manifest's runs (`avtokens.manifest.write_manifest`) from the records of the
    summarize and summarize_audio shard jobs: every video x preset done in both. `audio_of`:
    preset -> "<codec setting>/<weights>", the scope of its audio's records."""
    audio = {}
    for path in audio_records:
        record = read_record(path)
        for name, files in record["done"].items():
            audio[_audio_scope(record["wildcards"]), name] = local_files([files["summary"]])[0]
    runs = []
    for path in summary_records:
        record = read_record(path)
        scope = audio_of[record["wildcards"]["preset"]]
        for name, files in record["done"].items():
            if (scope, name) in audio:
                summary, visual, audio_tokens = local_files(
                    [files["summary"], files["visual_tokens"], files["audio_tokens"]]
                )
                runs.append({"summary": summary, "visual_tokens": visual, "audio_tokens": audio_tokens,
                             "audio_summary": audio[scope, name]})  # fmt: skip
    return runs


def manifest_runs_of(inputs, audio_of: dict) -> list[dict]:
    """The manifest's runs from a job's inputs: one job per video's four lists (`summaries`,
    `visual_tokens`, `audio_tokens`, `audio_summaries`: one entry per video x preset), or shard
    mode's records of the summaries (`manifest_runs`)."""
    if "visual_tokens" in inputs.keys():
        return [
            {"summary": s, "visual_tokens": v, "audio_tokens": a, "audio_summary": m}
            for s, v, a, m in zip(
                inputs.summaries,
                inputs.visual_tokens,
                inputs.audio_tokens,
                inputs.audio_summaries,
                strict=True,
            )
        ]
    return manifest_runs(inputs.summaries, inputs.audio_summaries, audio_of)


def _audio_scope(wildcards: dict) -> str:
    """ "<codec setting>/<weights>" of an audio job's wildcards, "<rate>hz" of an extraction's."""
    if "codec" in wildcards:
        return f"{wildcards['codec']}/{wildcards['weights']}"
    return f"{wildcards['rate']}hz" if "rate" in wildcards else ""


def failures(records: Iterable) -> tuple[list[dict], list[str]]:
    """The videos that failed in the stage of each record (not those passed on from upstream),
    each with the record's wildcards and its `scope` (the preset, the codec setting and weights,
    or the sample rate; "" for stages that have none), and the records that leave a video
    unfinished, failed there or upstream. Those must go for the next run to retry: Snakemake does not remake a
    missing file whose dependents are all present."""
    rows, unfinished = [], []
    for path in records:
        if Path(path).is_file():
            record = read_record(path)
            wildcards = record["wildcards"]
            scope = wildcards.get("preset") or _audio_scope(wildcards)
            for name, reason in record["failed"].items():
                rows.append({"video": name, "stage": record["stage"], "reason": reason, "scope": scope,
                             **wildcards})  # fmt: skip
            if record["failed"] or record["not_run"]:
                unfinished.append(str(path))
    return rows, unfinished


def settle_failures(records: Iterable, sources: Mapping[str, str], table: Path,
                    shown: int = 20) -> str | None:  # fmt: skip
    """At the end of a shard-mode run: None if every video finished (and no `table`). Otherwise list every
    failure in `table` (TSV: video, its path from `sources`, stage, preset or weights,
    reason), print one `ERROR video` line per video to stderr (the first `shown`), remove the
    records that left a video unfinished, so that the next run retries those videos and
    nothing else, and return what failed, for the run's closing message."""
    rows, unfinished = failures(records)
    storage = RunStorage.of_run()
    if not unfinished:
        Path(table).unlink(missing_ok=True)  # an earlier run's list, now settled
        if storage is not None:
            storage.remove(str(table))
        return None
    lines = ["video\tpath\tstage\tscope\treason\n"]
    for row in rows:
        fields = [row["video"], str(sources[row["video"]]), row["stage"], row["scope"], row["reason"]]
        lines.append("\t".join(fields) + "\n")
    with atomic_output(table) as tmp:  # a full disk: one line, not a traceback in the run's summary
        tmp.write_text("".join(lines), encoding="utf-8")
    if storage is not None:  # beside the records, in the bucket
        os.makedirs(os.path.dirname(storage.local(str(table))), exist_ok=True)
        shutil.copyfile(table, storage.local(str(table)))
        storage.store(str(table))
    by_video: dict[str, dict[str, list[str]]] = {}  # video: reason: the stages that failed for it
    for row in rows:
        scope = f" ({row['scope']})" if row["scope"] else ""
        by_video.setdefault(row["video"], {}).setdefault(row["reason"], []).append(f"{row['stage']}{scope}")
    for name, reasons in list(by_video.items())[:shown]:
        said = "; ".join(f"{', '.join(stages)}: {reason}" for reason, stages in reasons.items())
        print(f"ERROR video {name} ({sources[name]}): {said}", file=sys.stderr)
    remove_records(unfinished)
    return f"{len(by_video)} video(s) failed inside shard jobs, listed in {table}; the other videos finished"


def unfinished_records(records: Iterable[str]) -> list[str]:
    """Those of `records` that left a video unfinished, told by their markers; when the run's
    files are objects, by one listing of the folder that holds them all, not a request each."""
    records, storage = list(map(str, records)), RunStorage.of_run()
    if storage is None:
        return [record for record in records if unfinished_marker(record).exists()]
    if not records:
        return []
    listed = storage.listed(os.path.commonpath([os.path.dirname(record) for record in records]))
    return [record for record in records if str(unfinished_marker(record)) in listed]


def remove_records(records: Iterable[str]) -> None:
    """Remove shard records, and their markers, so that Snakemake reruns their jobs, which
    retry the unfinished videos only (the journal keeps the finished ones); objects too, when
    the run's files are objects."""
    storage = RunStorage.of_run()
    for record in records:
        for path in (Path(record), unfinished_marker(record)):
            path.unlink(missing_ok=True)
            if storage is not None:
                storage.remove(str(path))
