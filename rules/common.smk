import dataclasses
import os
import re
import sys

import pandas as pd
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The package lives beside the Snakefile: importable here and, through PYTHONPATH (set,
# not read, so no `envvars:` applies), in every job's script, whatever software
# environment runs it (venv, --sdm conda, a cluster node).
sys.path.insert(0, workflow.basedir)
os.environ.update(
    PYTHONPATH=os.pathsep.join(filter(None, [workflow.basedir, os.environ.get("PYTHONPATH")]))
)
from avtokens.checkpoints import cosmos_folder, dac_file
from avtokens.media import unusable_source
from avtokens.presets import grid_presets, make_preset, released_model_factors

DEMO_WEIGHTS = "resources/demo_weights"

validate(config, "../config/schemas/config.schema.yaml")
if "batch_windows" in config:
    raise WorkflowError(
        "config: `batch_windows` is now `batch_megapixels`, frames x pixels per model call in "
        "millions (64: four 17-frame windows at 1280x720); replace it"
    )

# Compiled kernels are kept for the jobs after the first (the `compiled` engine); a value
# already in the environment wins.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.abspath(config["compile_cache"]))

try:
    videos = pd.read_csv(
        config["videos"], sep="\t", dtype=str, keep_default_na=False, quoting=3
    )
except (OSError, pd.errors.ParserError) as err:
    raise WorkflowError(f"cannot read the sample sheet {config['videos']}: {err}")
validate(videos, "../config/schemas/videos.schema.yaml")
if videos["name"].duplicated().any():
    dupes = sorted(set(videos["name"][videos["name"].duplicated()]))
    raise WorkflowError(f"{config['videos']}: video names must be unique; repeated: {dupes}")
videos = videos.set_index("name", drop=False)
# Sources that a rule of this workflow makes (rules/example.smk) are not missing before it runs.
EXAMPLE_VIDEO = "resources/example/example.mp4"
MADE_HERE = {os.path.normpath(EXAMPLE_VIDEO)}
# A listed file that does not exist, or that this user may not read, is left out with one
# error line, so that the rest of a large sheet still runs (Snakemake itself reads a job's
# inputs, and an unreadable one would stop the whole run); the run then ends in failure
# (see `check_left_out_videos`).
LEFT_OUT_VIDEOS = {}
for name, path in videos["path"].items():
    reason = None if os.path.normpath(path) in MADE_HERE else unusable_source(path)
    if reason:
        print(f"ERROR {path}: {reason} (video {name} of {config['videos']}); left out", file=sys.stderr)
        LEFT_OUT_VIDEOS[name] = path
videos = videos.drop(index=list(LEFT_OUT_VIDEOS))
if videos.empty:
    raise WorkflowError(f"{config['videos']}: none of the listed videos exists and can be read")

try:
    grid, grid_skipped = grid_presets(config.get("grid") or {})
except ValueError as err:
    raise WorkflowError(f"config: {err}")
for name, fields in grid.items():
    if name in config["presets"] and config["presets"][name] != fields:
        raise WorkflowError(f"config: grid preset {name} differs from the preset of that name in `presets`")
for reason in grid_skipped:
    print(f"grid: left out {reason.removeprefix('preset ')}", file=sys.stderr)
try:
    PRESETS = {
        name: make_preset(name, fields, config["weights"])
        for name, fields in {**config["presets"], **grid}.items()
    }
except ValueError as err:
    raise WorkflowError(f"config: {err}")
RUN = list(dict.fromkeys([*config["run"], *grid]))
unknown = [name for name in RUN if name not in PRESETS]
if unknown:
    raise WorkflowError(
        f"config: `run` names presets that `presets` does not define: {unknown}; "
        f"defined: {sorted(PRESETS)}"
    )
if not RUN:
    raise WorkflowError("config: nothing to run: list presets in `run` or give a `grid`")

RESULTS = config["results"]
# The DAC weights (official or demo) the presets that run use: a video's audio is coded
# once per entry, whatever the number of presets.
AUDIO_WEIGHTS = sorted({PRESETS[name].weights for name in RUN})
VIDEOS_PER_JOB = config["videos_per_job"]
VIDEO_BATCHES = [list(videos.index[i : i + VIDEOS_PER_JOB]) for i in range(0, len(videos), VIDEOS_PER_JOB)]
CHECKPOINTS = config["checkpoints"]

# Checkpoint folder -> Hugging Face repo, for the official presets that run.
OFFICIAL_REPOS = {}
for name in RUN:
    preset = PRESETS[name]
    if preset.weights == "official":
        if OFFICIAL_REPOS.setdefault(preset.model, preset.repo) != preset.repo:
            raise WorkflowError(
                f"config: presets use two repos named {preset.model} "
                f"({OFFICIAL_REPOS[preset.model]} and {preset.repo}); their files would share a folder"
            )


def _alternatives(names):
    return "|".join(re.escape(name) for name in names)


wildcard_constraints:
    video=_alternatives(videos.index),
    preset=_alternatives(PRESETS),
    model=r"Cosmos-0\.1-Tokenizer-(CV|DV)\d+x\d+x\d+",
    folder=_alternatives(OFFICIAL_REPOS) or "(?!)",
    weights="official|demo",


def get_final_output():
    per_run = expand(
        f"{RESULTS}/{{preset}}/reconstructed/{{video}}_{{kind}}.mp4",
        preset=RUN,
        video=videos.index,
        kind=["combined", "comparison"],
    )
    per_video = expand(f"{RESULTS}/report/{{video}}_psnr_per_frame.png", video=videos.index)
    grid = [
        f"{RESULTS}/report/token_table.tsv",
        f"{RESULTS}/report/audio_table.tsv",
        f"{RESULTS}/report/quality_vs_tokens.png",
        f"{RESULTS}/manifest.jsonl",
    ]
    return per_run + per_video + grid


def batch_files(batch, pattern):
    """The paths `{RESULTS}/<pattern>` of a batch of videos; `pattern` names `{video}`, and
    `{{preset}}` or `{{weights}}` to leave a wildcard. Braces in video names are escaped
    so that they stay literal."""
    literal = [name.replace("{", "{{").replace("}", "}}") for name in batch]
    return [f"{RESULTS}/{pattern.format(video=name)}" for name in literal]


def all_summaries():
    return expand(
        f"{RESULTS}/{{preset}}/metrics/{{video}}_summary.json", preset=RUN, video=videos.index
    )


def all_token_files(part):
    """Every `part` (visual or audio) token file, in the same order as all_summaries()."""
    return expand(
        f"{RESULTS}/{{preset}}/tokens/{{video}}_{part}_tokens.safetensors",
        preset=RUN,
        video=videos.index,
    )


def all_audio_summaries():
    """Every video's audio summary, once per DAC weights that run."""
    return expand(f"{RESULTS}/audio/{{weights}}/{{video}}_summary.json", weights=AUDIO_WEIGHTS, video=videos.index)


def audio_summary_of_each_run():
    """The audio summary of every video x preset, in the same order as all_summaries()."""
    return [f"{RESULTS}/audio/{PRESETS[preset].weights}/{video}_summary.json" for preset in RUN for video in videos.index]


def audio_of_preset(suffix):
    """Input function: the per-video audio file `<video>_<suffix>` made with the preset's
    DAC weights (shared by every preset with those weights)."""

    def get(wildcards):
        return f"{RESULTS}/audio/{PRESETS[wildcards.preset].weights}/{wildcards.video}_{suffix}"

    return get


def frame_metrics_of_video(wildcards):
    """{preset: per-frame metrics file} of one video, for every preset that runs."""
    return {name: f"{RESULTS}/{name}/metrics/{wildcards.video}_frames.tsv" for name in RUN}


def source_video(wildcards):
    return videos.loc[wildcards.video, "path"]


def source_videos(wildcards):
    """A per-video encode job's video, as the list the (also batched) encode script takes."""
    return [source_video(wildcards)]


def video_names(wildcards):
    return [wildcards.video]


def preset_params(wildcards):
    """The preset's fields: a change to any of them reruns that preset's jobs."""
    return dataclasses.asdict(PRESETS[wildcards.preset])


def weights_file(part):
    """Input function for one Cosmos weights file of a preset: `encoder` or `decoder`.
    Demo weights are built by a rule; official ones are fetched by one unless present."""

    def get(wildcards):
        preset = PRESETS[wildcards.preset]
        if preset.weights == "demo":
            return f"{DEMO_WEIGHTS}/{preset.model}/{part}.jit"
        return str(cosmos_folder(CHECKPOINTS, preset) / f"{part}.jit")

    return get


def dac_weights(wildcards):
    """The DAC weights file of `{weights}` (official or demo)."""
    return str(dac_file(DEMO_WEIGHTS if wildcards.weights == "demo" else CHECKPOINTS))


def _lock_of(weights):
    """The lock file official weights are pinned in; stand-ins are not pinned."""
    return config["weights_lock"] if weights == "official" else None


def weights_lock(wildcards):
    return _lock_of(PRESETS[wildcards.preset].weights)


def dac_weights_lock(wildcards):
    return _lock_of(wildcards.weights)


def repo_of_folder(wildcards):
    return OFFICIAL_REPOS[wildcards.folder]


def demo_factors(wildcards):
    kind, temporal, spatial = released_model_factors(wildcards.model)
    return {"discrete": kind == "DV", "temporal": temporal, "spatial": spatial}


def report_outputs():
    print(f"\nOutputs under {RESULTS}/ (per preset: tokens/, reconstructed/, metrics/):")
    for path in get_final_output():
        print(f"  {path}")
    print(
        f"HTML report of all of it: run the same command again with --report {RESULTS}/report.zip, "
        "then open report/report.html inside the zip."
    )
    demo = sorted(name for name in RUN if PRESETS[name].weights == "demo")
    if demo:
        print(
            f"Presets {', '.join(demo)} used stand-in demo weights: their tokens and "
            "reconstructions carry no meaning; use `weights: official` for real ones."
        )


def check_left_out_videos(fail):
    """Name the videos left out at the start once more at the end; with `fail`, end a run
    that otherwise succeeded in failure."""
    if LEFT_OUT_VIDEOS:
        message = (
            f"{len(LEFT_OUT_VIDEOS)} video(s) of {config['videos']} do not exist or cannot be read and "
            "were left out: " + ", ".join(LEFT_OUT_VIDEOS.values())
        )
        if fail:
            raise WorkflowError(message)
        print(message, file=sys.stderr)
