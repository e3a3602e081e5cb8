from avtokens.audio import AudioDecode
from avtokens.rule import bound_heap_growth, run_stage

bound_heap_growth()  # the codec's window-sized buffers would fragment the heap (see there)

run_stage(
    snakemake,
    AudioDecode(
        **snakemake.params.codec,
        folder=snakemake.params.checkpoint,
        device=snakemake.config["device"],
        window_seconds=snakemake.config["audio_window_seconds"],
        weights_lock=snakemake.params.weights_lock,
    ),
)
