from avtokens.presets import Preset
from avtokens.rule import run_stage
from avtokens.visual import VisualEncode

run_stage(
    snakemake,
    VisualEncode(
        Preset(**snakemake.params.preset),
        checkpoint=snakemake.params.checkpoint,
        device=snakemake.config["device"],
        batch_megapixels=snakemake.config["batch_megapixels"],
        weights_lock=snakemake.params.weights_lock,
        picture=snakemake.params.picture,
    ),
)
