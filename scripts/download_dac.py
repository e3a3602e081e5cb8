from avtokens.checkpoints import fetch_url
from avtokens.rule import run_rule

run_rule(snakemake, fetch_url, snakemake.params.url, snakemake.output[0])
