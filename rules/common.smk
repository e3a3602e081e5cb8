import contextlib
import functools
import os
import re
import sys

import jsonschema
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The package lives beside the Snakefile: importable here and, through PYTHONPATH (set,
# not read, so no `envvars:` applies), in every job's script, whatever software
# environment runs it (venv, --sdm conda, a cluster node). The folder is this file's parent,
# not `workflow.basedir`, which is the outer workflow's when this one is used as a module.
PACKAGE_ROOT = os.path.dirname(workflow.current_basedir.get_path_or_uri(secret_free=True))
sys.path.insert(0, PACKAGE_ROOT)
os.environ.update(PYTHONPATH=os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")])))
from avtokens.outcome import left_out_message, written_since
from avtokens.run_plan import DEMO_WEIGHTS, ConfigError, RunPlan, read_sheet, under_prefix
from avtokens.shards import fill_pattern, remove_records, unfinished_records
from avtokens.storage import LOCAL_COPIES_VARIABLE, PREFIX_VARIABLE, RunStorage, is_url
from avtokens import scheduling

# Snakemake 9's scheduler re-picks jobs in chains that never stop, each pick asking the bucket
# about every ready job's inputs: one pending re-pick at most, and only while the rate limit
# holds jobs back.
scheduling.install()


def validated(data, schema, what):
    """`data` checked by `validate` (which also fills in the schema's defaults), its complaint
    in one line: Snakemake's own message prints the whole schema and the data."""
    try:
        validate(data, schema)
    except WorkflowError as err:
        cause = err.__context__
        if not isinstance(cause, jsonschema.ValidationError):
            raise
        where = "/".join(str(part) for part in cause.absolute_path)
        row = re.search(r"validating row (\d+) ", str(err))  # of a sample sheet, after its header line
        if row:
            where = f"line {int(row[1]) + 2}, column {where}"
        raise ConfigError(": ".join(filter(None, [what, where, cause.message]))) from None
    return data


EXAMPLE_VIDEO = "resources/example/example.mp4"  # made by rules/example.smk


# The S3 storage plugin's endpoint and keys, if given to Snakemake (--storage-s3-endpoint-url,
# ...), for what this workflow reads and writes itself (the sheet's s3:// sources, shard jobs'
# per-video files: avtokens.storage, through s3fs): where s3fs finds them, unless already set.
_s3 = (workflow.storage_provider_settings or {}).get("s3")
_s3 = _s3.get_settings(None) if _s3 is not None else None
for variable, setting in [("AWS_ENDPOINT_URL", "endpoint_url"), ("AWS_ACCESS_KEY_ID", "access_key"),
                          ("AWS_SECRET_ACCESS_KEY", "secret_key")]:  # fmt: skip
    if getattr(_s3, setting, None):
        os.environ.setdefault(variable, getattr(_s3, setting))

# Where a run's files are, when Snakemake's default storage provider keeps them in a bucket:
# the prefix its outputs go under ("" for local files), for the messages that name them, and
# for the jobs (avtokens.storage.RunStorage) that prefix and the folder of their local copies.
STORAGE_PREFIX = ""
if workflow.storage_settings.default_storage_provider:
    STORAGE_PREFIX = workflow.storage_settings.default_storage_prefix
    os.environ[PREFIX_VARIABLE] = STORAGE_PREFIX
    os.environ[LOCAL_COPIES_VARIABLE] = os.path.join(
        workflow.storage_registry.default_storage_provider.local_prefix, STORAGE_PREFIX.partition("://")[2]
    )


def say(line):
    """`line` on the terminal in one write: Snakemake's logger writes from a thread of its own,
    and print() writes the line and its end apart, so another line could land between them."""
    sys.stderr.write(f"{line}\n")


# A config or sheet that cannot run stops before any job, with one line saying what is wrong
# and what to do (a WorkflowError would be printed inside Snakemake's account of the frames).
try:
    validated(config, "../config/schemas/config.schema.yaml", "config")
    sheet = validated(read_sheet(config["videos"]), "../config/schemas/videos.schema.yaml", config["videos"])
    PLAN = RunPlan(config, config["videos"], zip(sheet["name"], sheet["path"]), made_here=[EXAMPLE_VIDEO])
except ConfigError as err:
    say(f"ERROR {err}")
    raise SystemExit(1)
for line in PLAN.left_out_lines():
    say(f"ERROR {line}")
for reason in PLAN.grid_skipped:
    say(f"grid: left out {reason.removeprefix('preset ')}")
RESULTS, SHARDS, RUN = PLAN.results, PLAN.shards, PLAN.run
# Compiled kernels are kept for the jobs after the first (the `compiled` engine); a value
# already in the environment wins.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.abspath(config["compile_cache"]))


def _alternatives(names):
    return "|".join(re.escape(name) for name in names)


wildcard_constraints:
    # In shard mode no rule has a {video} wildcard, and 100,000 names would make a slow regex.
    video="(?!)" if SHARDS else _alternatives(PLAN.videos),
    preset=_alternatives(PLAN.presets),
    shard=r"shard\d\d\d\d\d+",
    part=r"all|shard\d\d\d\d\d+",
    model=_alternatives(PLAN.demo_models) or "(?!)",
    folder=_alternatives(PLAN.official_sources) or "(?!)",
    file=_alternatives(sorted(PLAN.checkpoint_files)) or "(?!)",
    weights="official|demo",
    codec=_alternatives(PLAN.codec_settings),
    rate=_alternatives(PLAN.rates),


# The per-video files, the same in both modes: the audio at each codec's sample rate, and per
# codec setting and weights its codes, reconstruction and summary.
WAV = f"{RESULTS}/audio/{{rate}}hz/{{video}}.wav"
TIMELINE = f"{RESULTS}/audio/{{rate}}hz/{{video}}_timeline.json"
CODES = f"{RESULTS}/audio/{{codec}}/{{weights}}/{{video}}_codes.safetensors"
RECONSTRUCTED_WAV = f"{RESULTS}/audio/{{codec}}/{{weights}}/{{video}}_reconstructed.wav"
AUDIO_SUMMARY = f"{RESULTS}/audio/{{codec}}/{{weights}}/{{video}}_summary.json"
VISUAL_TOKENS = f"{RESULTS}/{{preset}}/tokens/{{video}}_visual_tokens.safetensors"
AUDIO_TOKENS = f"{RESULTS}/{{preset}}/tokens/{{video}}_audio_tokens.safetensors"
VISUAL_MP4 = f"{RESULTS}/{{preset}}/reconstructed/{{video}}_visual.mp4"
COMBINED_MP4 = f"{RESULTS}/{{preset}}/reconstructed/{{video}}_combined.mp4"
COMPARISON_MP4 = f"{RESULTS}/{{preset}}/reconstructed/{{video}}_comparison.mp4"
FRAME_METRICS = f"{RESULTS}/{{preset}}/metrics/{{video}}_frames.tsv"
SUMMARY = f"{RESULTS}/{{preset}}/metrics/{{video}}_summary.json"
PSNR_PLOT = f"{RESULTS}/report/{{video}}_psnr_per_frame.png"
# The report's pages (rules/report.smk).
REPORT_OVERVIEW = f"{RESULTS}/report/overview"
REPORT_PRESET_PAGE = f"{RESULTS}/report/presets/{{preset}}"
# Made by the last job, when every listed video finished (Snakefile, `check_run`).
RUN_COMPLETE = f"{RESULTS}/run_complete.json"
# Packed training shards (rules/pack.smk): a preset's dataset, and the pack target's verdict.
PACKED = f"{RESULTS}/packed/{{preset}}"
PACK_COMPLETE = f"{RESULTS}/packed/pack_complete.json"


def per_video(pattern, stage, presets=RUN):
    """Every video's file of `pattern`, for each of `presets` or each codec setting and weights
    that runs, as the pattern names them; in shard mode the records of `stage`'s shard jobs,
    which list those files."""
    key, names = ("shard", SHARDS) if SHARDS else ("video", PLAN.videos)
    pattern = PLAN.shard_record(stage) if SHARDS else pattern
    runs = [{"codec": c, "weights": w} for c, w in PLAN.audio_runs] if "{codec}" in pattern else [{}]
    runs = [{"preset": p} for p in presets] if "{preset}" in pattern else runs
    return [fill_pattern(pattern, PLAN.implied({**run, key: n})) for run in runs for n in names]


def get_final_output():
    outputs = [*per_video(COMBINED_MP4, "mux"), *per_video(COMPARISON_MP4, "compare_video")]
    outputs += per_video(PSNR_PLOT, "plot_frame_psnr")
    reports = ["token_table.tsv", "audio_table.tsv", "quality_vs_tokens.png"]
    outputs += [f"{RESULTS}/report/{name}" for name in reports] + [f"{RESULTS}/manifest.jsonl", REPORT_OVERVIEW]
    return outputs + expand(REPORT_PRESET_PAGE, preset=RUN)


def manifest_inputs(wildcards):
    """Per video x preset, in the same order: summary, token files, the audio summary of the
    preset's codec and weights. In shard mode the summaries' records, which list those files."""
    if SHARDS:
        return {"summaries": per_video(SUMMARY, "summarize"),
                "audio_summaries": per_video(AUDIO_SUMMARY, "summarize_audio")}  # fmt: skip
    return summaries_and_token_files(RUN)


def summaries_and_token_files(presets):
    """Every video x each of `presets`, in the same order: summary, token files, audio summary."""
    runs = [PLAN.implied({"preset": p, "video": v}) for p in presets for v in PLAN.videos]
    return {
        key: [fill_pattern(pattern, run) for run in runs]
        for key, pattern in [("summaries", SUMMARY), ("visual_tokens", VISUAL_TOKENS),
                             ("audio_tokens", AUDIO_TOKENS), ("audio_summaries", AUDIO_SUMMARY)]
    }  # fmt: skip


def pack_part_inputs(wildcards):
    """A pack part's videos x its preset: as the manifest's (`manifest_inputs`); in shard mode
    the records of the shard's summaries."""
    values = PLAN.implied({"preset": wildcards.preset, "shard": wildcards.part})
    if SHARDS:
        return {"summaries": [fill_pattern(PLAN.shard_record("summarize"), values)],
                "audio_summaries": [fill_pattern(PLAN.shard_record("summarize_audio"), values)]}  # fmt: skip
    return summaries_and_token_files([wildcards.preset])


def retrying_earlier_failures(input_function):
    """`input_function`, called after `retry_earlier_failures`: for the input functions of
    the shard rules and of the run's verdict, the first that Snakemake calls when it plans."""

    def get(wildcards):
        retry_earlier_failures()
        return input_function(wildcards)

    return get


@functools.cache  # once, before Snakemake looks at any record: later it has cached what exists
def retry_earlier_failures():
    """A run that executes jobs retries the videos that shard jobs of an earlier run left
    unfinished when that run ended before its verdict (`check_run`, which settles them): it
    removes those records as it plans, so their jobs rerun, and the verdict of a run before,
    which no longer holds (without it, Snakemake would not remake a record that only jobs it
    need not run read). A dry run says so and removes nothing, and so do --touch, listings
    and reports, a job's own process, --trust-io-cache (what exists is taken from the dry run
    before) and a run that another one holds a lock against (it stops on that lock)."""
    if not SHARDS or not workflow.is_main_process or workflow.executor_plugin is None:
        return
    records = unfinished_records(PLAN.shard_records())
    if not records:
        return
    what = f"the videos that {len(records)} shard job(s) of an earlier run left unfinished"
    if workflow.dryrun or workflow.touch or workflow.dag_settings.trust_io_cache:
        say(f"{what[0].upper()}{what[1:]} are retried by a run (not a dry run)")
    elif not held_by_another_run([*records, RUN_COMPLETE]):
        remove_records(records)
        with contextlib.suppress(FileNotFoundError):
            os.remove(RUN_COMPLETE)
        if STORAGE_PREFIX:
            RunStorage.of_run().remove(RUN_COMPLETE)
        say(f"Retrying {what}")


def held_by_another_run(paths):
    """Whether a Snakemake run in progress in this folder holds a lock on one of `paths`."""
    held = {os.path.abspath(path) for _, path in workflow.persistence._read_locks()}
    return any(os.path.abspath(path) in held for path in paths)


def of_plan(method, *wildcard_names):
    """Input or params function: the plan's `method` of the job's wildcards of those names."""
    return lambda wildcards: getattr(PLAN, method)(*(getattr(wildcards, name) for name in wildcard_names))


def source_input(wildcards):
    """Input function: a video's source as its jobs take it: an object (`s3://...`) through its
    storage plugin; a file a rule of this workflow makes (the example) as any output; any other
    file as the local file it is, also when a default storage provider keeps the results in a
    bucket (which would otherwise look for it there)."""
    path = PLAN.source(wildcards.video)
    if is_url(path):
        return storage(path)
    return path if os.path.normpath(path) == os.path.normpath(EXAMPLE_VIDEO) else local(path)


def checkpoint_files(files_of):
    """Input function: a job's checkpoint files `files_of(wildcards)`; with a default storage
    provider, objects whose local copies are kept after the run (`keep_local`): fetched once
    for a run, as Snakemake does, and not again by the next run on this machine."""

    def get(wildcards):
        files = files_of(wildcards)
        if not STORAGE_PREFIX:
            return files
        return [storage(under_prefix(STORAGE_PREFIX, path), keep_local=True) for path in files]

    return get


def as_found(path_of):
    """Params function: the path `path_of(wildcards)` where a job finds it: in place, or with a
    default storage provider in the local copy Snakemake makes of it. Not from the job's
    `input`: a param that needs it is unknown when Snakemake plans, which would count as changed
    and rerun every job; in place it is the value it always was, so no job reruns."""

    def get(wildcards):
        path = path_of(wildcards)
        return os.path.join(os.environ[LOCAL_COPIES_VARIABLE], path) if STORAGE_PREFIX else path

    return get


def audio_file(pattern):
    """Input function: a per-video audio file of `pattern` as the job's wildcards imply it (a
    preset's codes are shared by every preset of that codec setting and weights; a codec's wav by
    every codec of that sample rate)."""
    return lambda wildcards: fill_pattern(pattern, PLAN.implied(wildcards))


def model_files(*parts):
    return lambda wildcards: PLAN.model_files(wildcards.preset, *parts)
