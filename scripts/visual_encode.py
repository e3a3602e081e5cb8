from avtokens.presets import Preset
from avtokens.rule import run_stage
from avtokens.visual import VisualEncode

run_stage(
    snakemake,
    VisualEncode(
        Preset(**snakemake.params.preset),
        encoder_file=snakemake.input.encoder,
        decoder_file=snakemake.input.decoder,
        device=snakemake.config["device"],
        batch_megapixels=snakemake.config["batch_megapixels"],
        weights_lock=snakemake.params.weights_lock,
        picture=snakemake.params.picture,
    ),
)
