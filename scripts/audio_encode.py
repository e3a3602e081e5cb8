from avtokens.audio import encode_wav_files
from avtokens.rule import bound_heap_growth, run_rule

bound_heap_growth()  # DAC's window-sized buffers would fragment the heap (see there)

run_rule(
    snakemake,
    encode_wav_files,
    items=list(zip(snakemake.input.wavs, snakemake.input.timelines, snakemake.output, strict=True)),
    weights=snakemake.input.weights,
    device=snakemake.config["device"],
    window_seconds=snakemake.config["audio_window_seconds"],
    weights_lock=snakemake.params.weights_lock,
)
