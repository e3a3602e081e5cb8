from avtokens.outcome import check_run
from avtokens.rule import run_rule

params = snakemake.params
run_rule(snakemake, check_run, snakemake.output[0], sheet=params.sheet, videos=params.videos,
         left_out=params.left_out, presets=params.presets, records=snakemake.input.records,
         failures_table=params.failures_table)  # fmt: skip
