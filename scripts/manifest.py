from avtokens.manifest import write_manifest
from avtokens.rule import run_rule

files = snakemake.input
runs = [
    {"summary": s, "visual_tokens": v, "audio_tokens": a, "audio_summary": m}
    for s, v, a, m in zip(
        files.summaries, files.visual_tokens, files.audio_tokens, files.audio_summaries, strict=True
    )
]
run_rule(snakemake, write_manifest, runs, snakemake.output[0])
