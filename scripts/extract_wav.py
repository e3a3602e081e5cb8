from avtokens.audio import extract_audio
from avtokens.rule import run_rule

run_rule(
    snakemake,
    extract_audio,
    source=snakemake.input[0],
    name=snakemake.wildcards.video,
    wav_dest=snakemake.output.wav,
    timeline_dest=snakemake.output.timeline,
)
