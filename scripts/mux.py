from avtokens.atomic import atomic_output
from avtokens.media import mux
from avtokens.rule import run_stage
from avtokens.shards import PerVideo


def combine(video):
    with atomic_output(video.outputs["combined"]) as tmp:
        mux(video.inputs["video"], video.inputs["audio"], tmp)


run_stage(snakemake, PerVideo(combine))
