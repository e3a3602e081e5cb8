from avtokens.presets import Preset
from avtokens.rule import run_rule
from avtokens.visual import decode_token_file

run_rule(
    snakemake,
    decode_token_file,
    tokens_path=snakemake.input.tokens,
    dest=snakemake.output.video,
    source=snakemake.input.source,
    frame_metrics=snakemake.output.frame_metrics,
    preset=Preset(**snakemake.params.preset),
    decoder_file=snakemake.input.decoder,
    device=snakemake.config["device"],
    batch_megapixels=snakemake.config["batch_megapixels"],
    crf=snakemake.params.crf,
    x264_preset=snakemake.params.x264_preset,
    weights_lock=snakemake.params.weights_lock,
)
