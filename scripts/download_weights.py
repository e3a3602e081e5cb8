from avtokens.checkpoints import fetch_files
from avtokens.rule import run_rule

run_rule(snakemake, fetch_files, snakemake.params.repo, [snakemake.wildcards.file], snakemake.params.folder)
