from avtokens.rule import run_stage
from avtokens.shards import PerVideo
from avtokens.summary import write_audio_summary

run_stage(
    snakemake,
    PerVideo(
        lambda v: write_audio_summary(
            v.outputs["summary"],
            video=v.name,
            weights=snakemake.wildcards.weights,
            codes=v.inputs["codes"],
            source_wav=v.inputs["source_wav"],
            reconstructed_wav=v.inputs["reconstructed_wav"],
        )
    ),
)
