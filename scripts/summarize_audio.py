from avtokens.rule import run_stage
from avtokens.shards import PerVideo
from avtokens.summary import write_audio_summary

# The inputs are write_audio_summary's: codes, source_wav, reconstructed_wav.
run_stage(
    snakemake,
    PerVideo(
        lambda v: write_audio_summary(
            v.outputs["summary"], video=v.name, weights=snakemake.wildcards.weights, **v.inputs
        )
    ),
)
