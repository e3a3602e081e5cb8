from avtokens.rule import run_rule
from avtokens.shards import per_video_files
from avtokens.summary import write_audio_table

run_rule(snakemake, write_audio_table, per_video_files(snakemake.input, "summary"), snakemake.output[0])
