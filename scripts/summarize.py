from avtokens.rule import run_rule
from avtokens.summary import write_summary

run_rule(
    snakemake,
    write_summary,
    snakemake.output[0],
    video=snakemake.wildcards.video,
    preset=snakemake.wildcards.preset,
    **dict(snakemake.input.items()),
)
