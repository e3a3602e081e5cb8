from avtokens.manifest import write_manifest
from avtokens.rule import run_rule
from avtokens.shards import manifest_runs

files = snakemake.input
if "visual_tokens" in files.keys():  # per-video mode: four lists, one entry per video x preset
    runs = [
        {"summary": s, "visual_tokens": v, "audio_tokens": a, "audio_summary": m}
        for s, v, a, m in zip(
            files.summaries, files.visual_tokens, files.audio_tokens, files.audio_summaries, strict=True
        )
    ]
else:  # shard mode: the records of the summaries
    runs = manifest_runs(files.summaries, files.audio_summaries, snakemake.params.audio_of)
run_rule(snakemake, write_manifest, runs, snakemake.output[0])
