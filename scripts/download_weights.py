from avtokens.checkpoints import fetch_source
from avtokens.rule import run_rule

run_rule(snakemake, fetch_source, snakemake.params.source, snakemake.wildcards.file, snakemake.params.folder)
