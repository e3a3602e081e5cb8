from avtokens.audio_tokens import align_codes
from avtokens.rule import run_stage
from avtokens.shards import PerVideo

run_stage(
    snakemake,
    PerVideo(lambda v: align_codes(v.inputs["codes"], v.inputs["visual_tokens"], v.outputs["audio_tokens"])),
)
