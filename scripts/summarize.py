from avtokens.rule import run_stage
from avtokens.shards import PerVideo
from avtokens.summary import write_summary

run_stage(
    snakemake,
    PerVideo(
        lambda v: write_summary(
            v.outputs["summary"],
            video=v.name,
            preset=snakemake.wildcards.preset,
            frame_metrics=v.inputs["frame_metrics"],
            visual_tokens=v.inputs["visual_tokens"],
            audio_tokens=v.inputs["audio_tokens"],
        )
    ),
)
