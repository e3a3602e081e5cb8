from avtokens.plots import plot_quality_vs_tokens
from avtokens.rule import run_rule
from avtokens.shards import per_video_files

run_rule(snakemake, plot_quality_vs_tokens, per_video_files(snakemake.input, "summary"), snakemake.output[0])
