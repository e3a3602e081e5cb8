from avtokens.audio import AudioDecode
from avtokens.rule import bound_heap_growth, run_stage

bound_heap_growth()  # DAC's window-sized buffers would fragment the heap (see there)

run_stage(
    snakemake,
    AudioDecode(
        snakemake.input.weights,
        device=snakemake.config["device"],
        window_seconds=snakemake.config["audio_window_seconds"],
        weights_lock=snakemake.params.weights_lock,
    ),
)
