from avtokens.audio import encode_wav_file
from avtokens.rule import bound_heap_growth, run_rule

bound_heap_growth()  # DAC's window-sized buffers would fragment the heap (see there)

run_rule(
    snakemake,
    encode_wav_file,
    wav_path=snakemake.input.wav,
    visual_tokens=snakemake.input.visual_tokens,
    dest=snakemake.output[0],
    weights=snakemake.input.weights,
    device=snakemake.config["device"],
    window_seconds=snakemake.config["audio_window_seconds"],
    weights_lock=snakemake.params.weights_lock,
)
