from avtokens.packing import index_dataset
from avtokens.rule import run_rule

run_rule(
    snakemake, index_dataset, snakemake.input.records, snakemake.output.index, snakemake.wildcards.preset
)
