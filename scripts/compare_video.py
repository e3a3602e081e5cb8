from avtokens.compare import write_comparison
from avtokens.rule import run_rule

run_rule(
    snakemake,
    write_comparison,
    snakemake.input.source,
    snakemake.input.reconstruction,
    snakemake.input.frame_metrics,
    snakemake.input.visual_tokens,
    snakemake.output[0],
    label=snakemake.wildcards.preset,
    crf=snakemake.params.crf,
    x264_preset=snakemake.params.x264_preset,
)
