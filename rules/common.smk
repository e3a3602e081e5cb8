import dataclasses
import os
import re
import sys
import time
from pathlib import Path

import jsonschema
import pandas as pd
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The package lives beside the Snakefile: importable here and, through PYTHONPATH (set,
# not read, so no `envvars:` applies), in every job's script, whatever software
# environment runs it (venv, --sdm conda, a cluster node). The folder is this file's parent,
# not `workflow.basedir`, which is the outer workflow's when this one is used as a module.
PACKAGE_ROOT = os.path.dirname(workflow.current_basedir.get_path_or_uri(secret_free=True))
sys.path.insert(0, PACKAGE_ROOT)
os.environ.update(PYTHONPATH=os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")])))
from avtokens.checkpoints import checkpoint_folder
from avtokens.media import unusable_source
from avtokens.outcome import left_out_message
from avtokens.shards import fill_pattern
from avtokens.presets import grid_presets, make_preset
from avtokens.renamed_keys import renamed_keys

DEMO_WEIGHTS = "resources/demo_weights"
STARTED = time.time()  # this run's: what a job wrote since, this run made


def written_since(path, moment):
    return os.path.exists(path) and os.path.getmtime(path) >= moment


def config_error(message):
    """Stop before any job with one line saying what is wrong and what to do. (A WorkflowError
    would be printed inside Snakemake's account of the Snakefile's frames.)"""
    print(f"ERROR {message}", file=sys.stderr)
    raise SystemExit(1)


def validated(data, schema, what):
    """`validate` (which also fills in the schema's defaults), its complaint in one line:
    Snakemake's own message prints the whole schema and the data."""
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
        config_error(": ".join(filter(None, [what, where, cause.message])))


validated(config, "../config/schemas/config.schema.yaml", "config")
for message in renamed_keys(config):
    config_error(message)

# Compiled kernels are kept for the jobs after the first (the `compiled` engine); a value
# already in the environment wins.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.abspath(config["compile_cache"]))

try:
    videos = pd.read_csv(
        config["videos"], sep="\t", dtype=str, keep_default_na=False, quoting=3
    )
except (OSError, pd.errors.ParserError) as err:
    config_error(f"cannot read the sample sheet {config['videos']} ({err}): check the config's `videos`")
validated(videos, "../config/schemas/videos.schema.yaml", config["videos"])
if videos["name"].duplicated().any():
    dupes = sorted(set(videos["name"][videos["name"].duplicated()]))
    config_error(f"{config['videos']}: video names must be unique; rename the repeated ones: {dupes}")
videos = videos.set_index("name", drop=False)
# Sources that a rule of this workflow makes (rules/example.smk) are not missing before it runs.
EXAMPLE_VIDEO = "resources/example/example.mp4"
MADE_HERE = {os.path.normpath(EXAMPLE_VIDEO)}
# A listed file that does not exist, or that this user may not read, is left out with one
# error line, so that the rest of a large sheet still runs (Snakemake itself reads a job's
# inputs, and an unreadable one would stop the whole run); the run then ends in failure
# (the Snakefile's `check_run`).
LEFT_OUT_VIDEOS = {}
for name, path in videos["path"].items():
    reason = None if os.path.normpath(path) in MADE_HERE else unusable_source(path)
    if reason:
        print(f"ERROR {path}: {reason} (video {name} of {config['videos']}); left out", file=sys.stderr)
        LEFT_OUT_VIDEOS[name] = path
videos = videos.drop(index=list(LEFT_OUT_VIDEOS))
if videos.empty:
    config_error(f"{config['videos']}: none of the listed videos exists and can be read: fix their paths")

try:
    grid, grid_skipped = grid_presets(config.get("grid") or {})
except ValueError as err:
    config_error(f"config: {err}")
for name, fields in grid.items():
    if name in config["presets"] and config["presets"][name] != fields:
        config_error(f"config: grid preset {name} differs from the preset of that name in `presets`: rename that one")
for reason in grid_skipped:
    print(f"grid: left out {reason.removeprefix('preset ')}", file=sys.stderr)
try:
    PRESETS = {
        name: make_preset(name, fields, config["weights"])
        for name, fields in {**config["presets"], **grid}.items()
    }
except ValueError as err:
    config_error(f"config: {err}")
RUN = list(dict.fromkeys([*config["run"], *grid]))
unknown = [name for name in RUN if name not in PRESETS]
if unknown:
    config_error(
        f"config: `run` names presets that `presets` does not define: {unknown}; "
        f"defined: {sorted(PRESETS)}"
    )
if not RUN:
    config_error("config: nothing to run: list presets in `run` or give a `grid`")

RESULTS = config["results"]
# The audio of the presets that run: each codec setting (the codec's name, with `-q<codebooks>`
# where the number is a choice) -> a preset that uses it, the (setting, weights) pairs a video's
# audio is coded with (once each, whatever the number of presets) and the sample rates it is
# extracted at.
AUDIO = {}
for name in RUN:
    AUDIO.setdefault(PRESETS[name].audio, PRESETS[name])
AUDIO_RUNS = sorted({(PRESETS[name].audio, PRESETS[name].weights) for name in RUN})
RATES = sorted({str(preset.audio_codec.sample_rate) for preset in AUDIO.values()})
# Shard mode (shard_size > 0): consecutive rows of the sheet in shards of that many videos,
# named by their position, so appended rows add shards and leave the full ones as they were.
SHARD_SIZE = config["shard_size"]
REPORT_VIDEOS_PER_SHARD = config["report_videos_per_shard"]
if REPORT_VIDEOS_PER_SHARD is not None and not SHARD_SIZE:
    config_error(
        "config: `report_videos_per_shard` samples the comparison videos and plots of shard mode; "
        "set `shard_size` too, or leave it null (one job per video makes them for every video)"
    )
ROWS = list(videos["path"].items())
SHARDS = {
    f"shard{number:05d}": ROWS[start : start + SHARD_SIZE]
    for number, start in enumerate(range(0, len(ROWS) if SHARD_SIZE else 0, SHARD_SIZE or 1))
}
CHECKPOINTS = config["checkpoints"]

# Checkpoint folder -> where its files come from ({"repo": ...} or {"url": ...}), and the files
# the visual families and audio codecs read, for the official presets that run; stand-in
# folder -> the model it stands in for (a family's model or a codec), for the demo ones.
OFFICIAL_SOURCES, CHECKPOINT_FILES, DEMO_MODELS = {}, set(), {}
for name in RUN:
    preset = PRESETS[name]
    codec = preset.audio_codec
    if preset.weights == "demo":
        DEMO_MODELS.setdefault(preset.model, {"family": preset.family, "kind": preset.kind,
                                              "temporal": preset.temporal, "spatial": preset.spatial})  # fmt: skip
        DEMO_MODELS.setdefault(codec.folder, {"codec": codec.name})
        continue
    if OFFICIAL_SOURCES.setdefault(preset.model, {"repo": preset.repo}) != {"repo": preset.repo}:
        config_error(
            f"config: presets use two repos named {preset.model} "
            f"({OFFICIAL_SOURCES[preset.model]['repo']} and {preset.repo}); their files would share a folder"
        )
    OFFICIAL_SOURCES.setdefault(codec.folder, codec.source(config))
    CHECKPOINT_FILES.update(preset.tokenizer.checkpoint_files(), codec.files)


def _alternatives(names):
    return "|".join(re.escape(name) for name in names)


wildcard_constraints:
    # In shard mode no rule has a {video} wildcard, and 100,000 names would make a slow regex.
    video="(?!)" if SHARDS else _alternatives(videos.index),
    preset=_alternatives(PRESETS),
    shard=r"shard\d\d\d\d\d+",
    model=_alternatives(DEMO_MODELS) or "(?!)",
    folder=_alternatives(OFFICIAL_SOURCES) or "(?!)",
    file=_alternatives(sorted(CHECKPOINT_FILES)) or "(?!)",
    weights="official|demo",
    codec=_alternatives(AUDIO),
    rate=_alternatives(RATES),


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


def get_final_output():
    if SHARDS:
        per_run = expand(shard_record("{preset}", "{stage}"), preset=RUN, stage=["mux", "compare_video"],
                         shard=SHARDS)  # fmt: skip
        per_video = expand(shard_record("videos", "plot_frame_psnr"), shard=SHARDS)
    else:
        per_run = expand([COMBINED_MP4, COMPARISON_MP4], preset=RUN, video=videos.index)
        per_video = expand(PSNR_PLOT, video=videos.index)
    grid = [
        f"{RESULTS}/report/token_table.tsv",
        f"{RESULTS}/report/audio_table.tsv",
        f"{RESULTS}/report/quality_vs_tokens.png",
        f"{RESULTS}/manifest.jsonl",
        REPORT_OVERVIEW,
        *expand(REPORT_PRESET_PAGE, preset=RUN),
    ]
    return per_run + per_video + grid


def shard_record(scope, stage):
    """The record a shard job of `stage` writes (scope: a preset, audio/<rate>hz,
    audio/<codec>/<weights> or videos)."""
    return f"{RESULTS}/shards/{scope}/{{shard}}/{stage}.shard.json"


def all_summaries():
    """Every video x preset summary (in shard mode, the records of the shards' summaries)."""
    if SHARDS:
        return expand(shard_record("{preset}", "summarize"), preset=RUN, shard=SHARDS)
    return expand(SUMMARY, preset=RUN, video=videos.index)


def all_audio_summaries():
    """Every video's audio summary, once per codec setting and weights that run (or the shards' records)."""
    if SHARDS:
        pattern, key, names = shard_record("audio/{codec}/{weights}", "summarize_audio"), "shard", SHARDS
    else:
        pattern, key, names = AUDIO_SUMMARY, "video", videos.index
    return [fill_pattern(pattern, {"codec": c, "weights": w, key: n}) for c, w in AUDIO_RUNS for n in names]


def comparisons_of_preset(wildcards):
    """The preset's comparison videos (in shard mode, the records that list them)."""
    if SHARDS:
        return expand(shard_record(wildcards.preset, "compare_video"), shard=SHARDS)
    return expand(COMPARISON_MP4, preset=wildcards.preset, video=videos.index)


def all_psnr_plots():
    """Every video's PSNR plot (in shard mode, the records that list them)."""
    if SHARDS:
        return expand(shard_record("videos", "plot_frame_psnr"), shard=SHARDS)
    return expand(PSNR_PLOT, video=videos.index)


def manifest_inputs(wildcards):
    """Per video x preset, in the same order: summary, token files, the audio summary of the
    preset's codec and weights. In shard mode the summaries' records, which list those files."""
    if SHARDS:
        return {"summaries": all_summaries(), "audio_summaries": all_audio_summaries()}
    runs = [audio_values({"preset": p, "video": v}) for p in RUN for v in videos.index]
    return {
        key: [fill_pattern(pattern, run) for run in runs]
        for key, pattern in [("summaries", SUMMARY), ("visual_tokens", VISUAL_TOKENS),
                             ("audio_tokens", AUDIO_TOKENS), ("audio_summaries", AUDIO_SUMMARY)]
    }  # fmt: skip


def audio_values(wildcards):
    """The wildcards, with the audio ones they imply: a preset's codec setting and weights, a
    codec setting's sample rate."""
    values = dict(wildcards.items())
    if "preset" in values:
        preset = PRESETS[values["preset"]]
        values.update(codec=preset.audio, weights=preset.weights)
    if "codec" in values:
        values["rate"] = str(AUDIO[values["codec"]].audio_codec.sample_rate)
    return values


def audio_file(pattern):
    """Input function: a per-video audio file of `pattern` as the job's wildcards imply it (a
    preset's codes are shared by every preset of that codec setting and weights; a codec's wav by
    every codec of that sample rate)."""
    return lambda wildcards: fill_pattern(pattern, audio_values(wildcards))


def frame_metrics_of_video(wildcards):
    """{preset: per-frame metrics file} of one video, for every preset that runs."""
    return {name: fill_pattern(FRAME_METRICS, {"preset": name, "video": wildcards.video}) for name in RUN}


def source_video(wildcards):
    return videos.loc[wildcards.video, "path"]


def preset_params(wildcards):
    """The preset's fields its visual jobs read: a change to any of them reruns those jobs. Not
    its codec's (`codec`, `codebooks`): a change of codec makes other audio, not other visual
    tokens."""
    fields = dataclasses.asdict(PRESETS[wildcards.preset])
    return {key: value for key, value in fields.items() if key not in ("codec", "codebooks")}


def model_folder(preset):
    """Where the preset's checkpoint is: the stand-in folder a rule builds (demo weights), or
    the official one."""
    if preset.weights == "demo":
        return f"{DEMO_WEIGHTS}/{preset.model}"
    return str(checkpoint_folder(CHECKPOINTS, preset))


def model_files(*parts):
    """Input function: the checkpoint files the preset's `parts` (encoder, decoder) read: its
    stand-in folder, built whole by one rule, or each official file, fetched unless present."""

    def get(wildcards):
        preset = PRESETS[wildcards.preset]
        if preset.weights == "demo":
            return [model_folder(preset)]
        return [f"{model_folder(preset)}/{name}" for name in preset.tokenizer.checkpoint_files(*parts)]

    return get


def checkpoint_of_preset(wildcards):
    return model_folder(PRESETS[wildcards.preset])


def codec_folder(wildcards):
    """Where the checkpoint of `{codec}` is: its stand-in folder (demo weights) or the official one."""
    return f"{DEMO_WEIGHTS if wildcards.weights == 'demo' else CHECKPOINTS}/{AUDIO[wildcards.codec].audio_codec.folder}"


def codec_files(wildcards):
    """Input function: the checkpoint files the codec reads: its stand-in folder, built whole by
    one rule, or each official file, fetched unless present."""
    if wildcards.weights == "demo":
        return [codec_folder(wildcards)]
    return [f"{codec_folder(wildcards)}/{name}" for name in AUDIO[wildcards.codec].audio_codec.files]


def codec_of_setting(wildcards):
    """The audio jobs' codec and number of codebooks."""
    preset = AUDIO[wildcards.codec]
    return {"codec": preset.codec, "codebooks": preset.audio_codebooks}


def _lock_of(weights):
    """The lock file official weights are pinned in; stand-ins are not pinned."""
    return config["weights_lock"] if weights == "official" else None


def weights_lock(wildcards):
    return _lock_of(PRESETS[wildcards.preset].weights)


def codec_weights_lock(wildcards):
    return _lock_of(wildcards.weights)


def source_of_folder(wildcards):
    return OFFICIAL_SOURCES[wildcards.folder]


def stand_in_model(wildcards):
    """The model a stand-in folder is built for: a family's model, or a codec."""
    return DEMO_MODELS[wildcards.model]


def report_outputs():
    print(f"\nOutputs under {RESULTS}/ (per preset: tokens/, reconstructed/, metrics/):")
    if SHARDS:
        print(f"  {len(videos)} videos in {len(SHARDS)} shards of up to {SHARD_SIZE}; what each shard job "
              f"made is listed in its record under {RESULTS}/shards/")
    for path in get_final_output():
        if not path.endswith(".shard.json"):
            print(f"  {path}")
    print(f"Report: {REPORT_OVERVIEW}/index.html, with a page per preset (README, \"Judging fidelity\")")
    demo = sorted(name for name in RUN if PRESETS[name].weights == "demo")
    if demo:
        print(
            f"Presets {', '.join(demo)} used stand-in demo weights: their tokens carry no meaning, "
            "their reconstructions show only that the pipeline works (the report says what they "
            "look like); use `weights: official` for real ones."
        )


def shard_records_of_run():
    """Every record the shard jobs of this run write (none outside shard mode)."""
    scopes = {"videos": ["plot_frame_psnr"]} | {f"audio/{rate}hz": ["extract_wav"] for rate in RATES}
    scopes |= {f"audio/{c}/{w}": ["audio_encode", "audio_decode", "summarize_audio"] for c, w in AUDIO_RUNS}
    scopes |= {p: ["visual_encode", "visual_decode", "align_audio", "summarize", "mux", "compare_video"] for p in RUN}
    return [
        shard_record(scope, stage).replace("{shard}", shard)
        for scope, stages in scopes.items()
        for stage in stages
        for shard in SHARDS
    ]
