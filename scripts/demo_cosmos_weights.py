from pathlib import Path

from avtokens.demo_weights import write_cosmos_stand_in
from avtokens.rule import run_rule

run_rule(snakemake, write_cosmos_stand_in, Path(snakemake.output.encoder).parent, **snakemake.params.factors)
