from avtokens.example import write_example_video
from avtokens.rule import run_rule

run_rule(snakemake, write_example_video, snakemake.output[0], seconds=snakemake.params.seconds)
