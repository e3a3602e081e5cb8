from avtokens.packing import PackSettings, write_part
from avtokens.rule import run_rule
from avtokens.shards import manifest_runs_of

params = snakemake.params
runs = manifest_runs_of(snakemake.input, params.audio_of)
run_rule(
    snakemake,
    write_part,
    runs,
    snakemake.output.record,
    PackSettings(**params.settings),
    params.videos,
)
