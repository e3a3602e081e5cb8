from avtokens.manifest import write_manifest
from avtokens.rule import run_rule

runs = [
    {"summary": s, "visual_tokens": v, "audio_tokens": a}
    for s, v, a in zip(
        snakemake.input.summaries, snakemake.input.visual_tokens, snakemake.input.audio_tokens, strict=True
    )
]
run_rule(snakemake, write_manifest, runs, snakemake.output[0])
