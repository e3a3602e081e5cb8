# mp4 -> visual tokens (the preset's tokenizer family) + audio tokens (the preset's codec),
# aligned per latent frame -> reconstruction -> muxed mp4. The README explains the outputs;
# rules/common.smk holds the config logic.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/weights.smk"
include: "rules/example.smk"
include: "rules/audio.smk"
include: "rules/visual.smk"
include: "rules/mux.smk"
include: "rules/report.smk"
include: "rules/pack.smk"


if SHARDS:

    include: "rules/shards.smk"



rule all:
    input:
        RUN_COMPLETE,


# The run's verdict is a job, not an `onsuccess` handler: a module's handlers are dropped and
# a run with nothing to do calls none. It fails while a listed video is left out or failed.
# Local: it reads the shard records and writes one small file.
rule check_run:
    localrule: True
    message:
        "Checking that every video of the sheet finished"
    input:
        records=retrying_earlier_failures(lambda wildcards: PLAN.shard_records()),
        outputs=[path for path in get_final_output() if not path.endswith(".shard.json")],
    output:
        RUN_COMPLETE,
    log:
        f"{RESULTS}/logs/check_run.log",
    params:
        sheet=config["videos"],
        videos=PLAN.videos,
        left_out=PLAN.left_out,
        presets=RUN,
        failures_table=f"{RESULTS}/shards/failed_videos.tsv" if SHARDS else None,
    conda:
        "envs/avtokens.yaml"
    script:
        "scripts/check_run.py"


onsuccess:
    targets = set(workflow.dag_settings.targets)
    if targets & {"pack", PACK_COMPLETE}:
        print(PLAN.pack_note(STORAGE_PREFIX))
    if not targets or targets - {"pack", PACK_COMPLETE}:
        print(PLAN.outputs_note(get_final_output(), REPORT_OVERVIEW, STORAGE_PREFIX))


# A run that failed before its verdict (which names them itself): the videos left out at the
# start, named once more.
onerror:
    if PLAN.left_out and not written_since(rules.check_run.log[0], PLAN.started):
        say(f"ERROR {left_out_message(config['videos'], PLAN.left_out)}")
