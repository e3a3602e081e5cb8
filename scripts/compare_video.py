from avtokens.compare import write_comparison
from avtokens.rule import run_stage
from avtokens.shards import PerVideo

run_stage(
    snakemake,
    PerVideo(
        lambda v: write_comparison(
            v.inputs["source"],
            v.inputs["reconstruction"],
            v.inputs["frame_metrics"],
            v.inputs["visual_tokens"],
            v.outputs["comparison"],
            label=snakemake.wildcards.preset,
            crf=snakemake.params.crf,
            x264_preset=snakemake.params.x264_preset,
        )
    ),
)
