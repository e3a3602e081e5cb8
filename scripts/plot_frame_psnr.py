from avtokens.plots import plot_frame_psnr
from avtokens.rule import run_rule

run_rule(
    snakemake, plot_frame_psnr, dict(snakemake.input.items()), snakemake.wildcards.video, snakemake.output[0]
)
