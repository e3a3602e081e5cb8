from avtokens.demo_weights import write_stand_in
from avtokens.rule import run_rule

run_rule(snakemake, write_stand_in, snakemake.output[0], snakemake.params.model)
