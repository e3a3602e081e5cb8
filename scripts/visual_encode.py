from avtokens.presets import Preset
from avtokens.rule import run_rule
from avtokens.visual import encode_video_files

run_rule(
    snakemake,
    encode_video_files,
    videos=list(zip(snakemake.input.videos, snakemake.output, snakemake.params.names, strict=True)),
    preset=Preset(**snakemake.params.preset),
    encoder_file=snakemake.input.encoder,
    decoder_file=snakemake.input.decoder,
    device=snakemake.config["device"],
    batch_megapixels=snakemake.config["batch_megapixels"],
    weights_lock=snakemake.params.weights_lock,
    picture=snakemake.params.picture,
)
