from avtokens.rule import run_rule
from avtokens.summary import write_audio_summary

run_rule(
    snakemake,
    write_audio_summary,
    snakemake.output[0],
    video=snakemake.wildcards.video,
    weights=snakemake.wildcards.weights,
    **dict(snakemake.input.items()),
)
