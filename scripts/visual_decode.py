from avtokens.presets import Preset
from avtokens.rule import run_stage
from avtokens.visual import VisualDecode

run_stage(
    snakemake,
    VisualDecode(
        Preset(**snakemake.params.preset),
        checkpoint=snakemake.params.checkpoint,
        device=snakemake.config["device"],
        batch_megapixels=snakemake.config["batch_megapixels"],
        crf=snakemake.params.crf,
        x264_preset=snakemake.params.x264_preset,
        weights_lock=snakemake.params.weights_lock,
    ),
)
