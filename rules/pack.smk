# Packed training shards (`snakemake pack`; README, "Packed training shards"): per preset, its
# videos' token files cut into clips and written into WebDataset tars, one part per shard of
# the sheet (one, "all", outside shard mode), then the dataset's index and card, and the
# target's verdict. A plain run makes none of it.

rule pack_part:
    input:
        unpack(retrying_earlier_failures(pack_part_inputs)),
    output:
        record=f"{PACKED}/{{part}}.pack.json",
    log:
        f"{RESULTS}/logs/packed/{{preset}}/{{part}}.pack_part.log",
    params:
        settings=PLAN.pack_settings,
        audio_of=PLAN.audio_of(),
        videos=of_plan("pack_videos", "part"),
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/pack_part.py"


rule pack_index:
    input:
        records=lambda wildcards: expand(f"{PACKED}/{{part}}.pack.json", preset=wildcards.preset, part=PLAN.pack_parts),
    output:
        index=f"{PACKED}/dataset.json",
        card=f"{PACKED}/README.md",
    log:
        f"{RESULTS}/logs/packed/{{preset}}/pack_index.log",
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/pack_index.py"


# The target: fails naming every video that a packed dataset lacks, as the run's verdict does.
rule pack:
    localrule: True
    message:
        "Checking that every video was packed"
    input:
        indexes=expand(f"{PACKED}/dataset.json", preset=PLAN.pack_presets),
    output:
        PACK_COMPLETE,
    log:
        f"{RESULTS}/logs/packed/check_pack.log",
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/check_pack.py"
