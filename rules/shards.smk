# Shard mode (`shard_size` > 0): every per-video rule also runs as one job per shard of
# videos (x preset, x codec setting and weights, or x sample rate), with the same script, params
# and per-video files.
# Snakemake tracks one record per shard job (avtokens.shards explains what it lists);
# the per-video rules stay defined but match nothing, as no {video} wildcard does.

import functools

from avtokens.shards import files_state


@retrying_earlier_failures
def shard_sources(wildcards):
    """The shard's sources that a rule of this workflow makes (the example clip): inputs, so
    that it runs first. The others are not declared: Snakemake's bookkeeping of 100,000 input
    files would take most of the planning time; `sources_state` below reruns a shard job
    when one of them changes instead."""
    made_here = os.path.normpath(EXAMPLE_VIDEO)
    return [path for _, path in SHARDS[wildcards.shard] if os.path.normpath(path) == made_here]


@functools.cache
def sources_state(shard):
    return files_state((path for _, path in SHARDS[shard]), PLAN.object_identities)


def shard_spec(inputs, outputs, report=False):
    """Params function: a shard job's rows (name, source) and the per-video file patterns of
    its stage with the job's wildcards and the audio ones they imply filled in (`PLAN.implied`;
    "source": the row's file).
    For stages that read the sources, a digest of their sizes and modification times: a
    changed source changes the params, which reruns the job (and it redoes that video).
    `report`: a stage whose outputs are only for looking at, made for the first
    `report_videos_per_shard` rows."""

    def get(wildcards):
        values = {key: value for key, value in PLAN.implied(wildcards).items() if key != "shard"}
        fill = lambda files: {key: fill_pattern(pattern, values) for key, pattern in files.items()}
        rows = SHARDS[wildcards.shard]
        if report and PLAN.report_videos_per_shard is not None:
            rows = rows[: PLAN.report_videos_per_shard]
        spec = {"videos": rows, "inputs": fill(inputs), "outputs": fill(outputs)}
        if "source" in inputs.values():
            spec["sources_state"] = sources_state(wildcards.shard)
        return spec

    return get


def upstream(*stages):
    """Input function: the records of the stages a shard job takes its videos from, of the
    scopes the job's wildcards imply (`PLAN.implied`)."""
    return retrying_earlier_failures(
        lambda wildcards: [fill_pattern(PLAN.shard_record(s), PLAN.implied(wildcards)) for s in stages]
    )


use rule extract_wav as shard_extract_wav with:
    input:
        sources=shard_sources,
    output:
        record=PLAN.shard_record("extract_wav"),
    log:
        f"{RESULTS}/logs/shards/audio/{{rate}}hz/{{shard}}.extract_wav.log",
    params:
        shard=shard_spec({"source": "source"}, {"wav": WAV, "timeline": TIMELINE}),


use rule audio_encode as shard_audio_encode with:
    input:
        records=upstream("extract_wav"),
        weights=checkpoint_files(of_plan("codec_files", "codec", "weights")),
    output:
        record=PLAN.shard_record("audio_encode"),
    log:
        f"{RESULTS}/logs/shards/audio/{{codec}}/{{weights}}/{{shard}}.audio_encode.log",
    params:
        shard=shard_spec({"wav": WAV, "timeline": TIMELINE}, {"codes": CODES}),


use rule audio_decode as shard_audio_decode with:
    input:
        records=upstream("audio_encode"),
        weights=checkpoint_files(of_plan("codec_files", "codec", "weights")),
    output:
        record=PLAN.shard_record("audio_decode"),
    log:
        f"{RESULTS}/logs/shards/audio/{{codec}}/{{weights}}/{{shard}}.audio_decode.log",
    params:
        shard=shard_spec({"codes": CODES}, {"wav": RECONSTRUCTED_WAV}),


use rule summarize_audio as shard_summarize_audio with:
    input:
        records=upstream("audio_decode"),
    output:
        record=PLAN.shard_record("summarize_audio"),
    log:
        f"{RESULTS}/logs/shards/audio/{{codec}}/{{weights}}/{{shard}}.summarize_audio.log",
    params:
        shard=shard_spec(
            {"codes": CODES, "source_wav": WAV, "reconstructed_wav": RECONSTRUCTED_WAV}, {"summary": AUDIO_SUMMARY}
        ),


use rule visual_encode as shard_visual_encode with:
    input:
        sources=shard_sources,
        weights=checkpoint_files(model_files("encoder", "decoder")),
    output:
        record=PLAN.shard_record("visual_encode"),
    log:
        f"{RESULTS}/logs/shards/{{preset}}/{{shard}}.visual_encode.log",
    params:
        shard=shard_spec({"source": "source"}, {"tokens": VISUAL_TOKENS}),


use rule visual_decode as shard_visual_decode with:
    input:
        records=upstream("visual_encode"),
        sources=shard_sources,
        weights=checkpoint_files(model_files("decoder")),
    output:
        record=PLAN.shard_record("visual_decode"),
    log:
        f"{RESULTS}/logs/shards/{{preset}}/{{shard}}.visual_decode.log",
    params:
        shard=shard_spec(
            {"tokens": VISUAL_TOKENS, "source": "source"}, {"video": VISUAL_MP4, "frame_metrics": FRAME_METRICS}
        ),


use rule align_audio as shard_align_audio with:
    input:
        records=upstream("visual_encode", "audio_encode"),
    output:
        record=PLAN.shard_record("align_audio"),
    log:
        f"{RESULTS}/logs/shards/{{preset}}/{{shard}}.align_audio.log",
    params:
        shard=shard_spec({"codes": CODES, "visual_tokens": VISUAL_TOKENS}, {"audio_tokens": AUDIO_TOKENS}),


use rule summarize as shard_summarize with:
    input:
        records=upstream("visual_decode", "align_audio"),
    output:
        record=PLAN.shard_record("summarize"),
    log:
        f"{RESULTS}/logs/shards/{{preset}}/{{shard}}.summarize.log",
    params:
        shard=shard_spec(
            {"frame_metrics": FRAME_METRICS, "visual_tokens": VISUAL_TOKENS, "audio_tokens": AUDIO_TOKENS},
            {"summary": SUMMARY},
        ),


use rule mux as shard_mux with:
    input:
        records=upstream("visual_decode", "audio_decode"),
    output:
        record=PLAN.shard_record("mux"),
    log:
        f"{RESULTS}/logs/shards/{{preset}}/{{shard}}.mux.log",
    params:
        shard=shard_spec({"video": VISUAL_MP4, "audio": RECONSTRUCTED_WAV}, {"combined": COMBINED_MP4}),


use rule compare_video as shard_compare_video with:
    input:
        records=upstream("visual_decode"),
        sources=shard_sources,
    output:
        record=PLAN.shard_record("compare_video"),
    log:
        f"{RESULTS}/logs/shards/{{preset}}/{{shard}}.compare_video.log",
    params:
        shard=shard_spec(
            {"source": "source", "reconstruction": VISUAL_MP4, "frame_metrics": FRAME_METRICS,
             "visual_tokens": VISUAL_TOKENS},
            {"comparison": COMPARISON_MP4},
            report=True,
        ),  # fmt: skip


use rule plot_frame_psnr as shard_plot_frame_psnr with:
    input:
        records=retrying_earlier_failures(
            lambda wildcards: [fill_pattern(PLAN.shard_record("visual_decode"), {"preset": name}) for name in RUN]
        ),
    output:
        record=PLAN.shard_record("plot_frame_psnr"),
    log:
        f"{RESULTS}/logs/shards/{{shard}}.plot_frame_psnr.log",
    params:
        shard=shard_spec(
            {name: fill_pattern(FRAME_METRICS, {"preset": name}) for name in RUN}, {"plot": PSNR_PLOT}, report=True
        ),
