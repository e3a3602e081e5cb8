from avtokens.rule import run_stage
from avtokens.shards import PerVideo
from avtokens.summary import write_summary

# The inputs are write_summary's: frame_metrics, visual_tokens, audio_tokens.
run_stage(
    snakemake,
    PerVideo(
        lambda v: write_summary(
            v.outputs["summary"], video=v.name, preset=snakemake.wildcards.preset, **v.inputs
        )
    ),
)
