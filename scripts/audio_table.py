from avtokens.rule import run_rule
from avtokens.summary import write_audio_table

run_rule(snakemake, write_audio_table, list(snakemake.input), snakemake.output[0])
