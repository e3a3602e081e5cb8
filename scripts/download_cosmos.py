from pathlib import Path

from avtokens.checkpoints import fetch_cosmos
from avtokens.rule import run_rule

run_rule(snakemake, fetch_cosmos, snakemake.params.repo, Path(snakemake.output.encoder).parent)
