from avtokens.plots import plot_frame_psnr
from avtokens.rule import run_stage
from avtokens.shards import PerVideo

# The inputs are the video's per-frame metrics, one per preset (named after it).
run_stage(snakemake, PerVideo(lambda v: plot_frame_psnr(v.inputs, v.name, v.outputs["plot"])))
