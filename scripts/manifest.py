from avtokens.manifest import write_manifest
from avtokens.rule import run_rule
from avtokens.shards import manifest_runs_of

run_rule(
    snakemake,
    write_manifest,
    manifest_runs_of(snakemake.input, snakemake.params.audio_of),
    snakemake.output[0],
)
