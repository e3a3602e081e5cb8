from avtokens.presets import Preset
from avtokens.rule import run_rule
from avtokens.visual import encode_video_file

run_rule(
    snakemake,
    encode_video_file,
    source=snakemake.input.video,
    dest=snakemake.output[0],
    preset=Preset(**snakemake.params.preset),
    encoder_file=snakemake.input.encoder,
    decoder_file=snakemake.input.decoder,
    device=snakemake.config["device"],
    batch_windows=snakemake.config["batch_windows"],
    name=snakemake.wildcards.video,
    weights_lock=snakemake.params.weights_lock,
)
