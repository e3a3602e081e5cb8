from avtokens.media import extract_audio
from avtokens.rule import run_stage
from avtokens.shards import PerVideo

rate = int(snakemake.wildcards.rate)
run_stage(
    snakemake,
    PerVideo(
        lambda v: extract_audio(v.inputs["source"], v.name, rate, v.outputs["wav"], v.outputs["timeline"])
    ),
)
