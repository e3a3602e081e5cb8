from avtokens.plots import plot_quality_vs_tokens
from avtokens.rule import run_rule

run_rule(snakemake, plot_quality_vs_tokens, list(snakemake.input), snakemake.output[0])
