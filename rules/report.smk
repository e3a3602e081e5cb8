# Fidelity: numbers per video x preset (and per video for the audio, coded once), tables
# across the grid, comparison videos and plots, all shown by `snakemake --report report.zip`.


rule summarize:
    input:
        frame_metrics=FRAME_METRICS,
        visual_tokens=VISUAL_TOKENS,
        audio_tokens=AUDIO_TOKENS,
    output:
        summary=SUMMARY,
    log:
        f"{RESULTS}/logs/{{preset}}/{{video}}.summarize.log",
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/summarize.py"


rule summarize_audio:
    input:
        codes=CODES,
        source_wav=WAV,
        reconstructed_wav=RECONSTRUCTED_WAV,
    output:
        summary=AUDIO_SUMMARY,
    log:
        f"{RESULTS}/logs/audio/{{weights}}/{{video}}.summarize_audio.log",
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/summarize_audio.py"


rule audio_table:
    input:
        all_audio_summaries(),
    output:
        report(
            f"{RESULTS}/report/audio_table.tsv",
            caption="../report/audio_table.rst",
            category="Token table",
        ),
    log:
        f"{RESULTS}/logs/audio_table.log",
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/audio_table.py"


rule token_table:
    input:
        all_summaries(),
    output:
        report(
            f"{RESULTS}/report/token_table.tsv",
            caption="../report/token_table.rst",
            category="Token table",
        ),
    log:
        f"{RESULTS}/logs/token_table.log",
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/token_table.py"


rule compare_video:
    input:
        source=source_video,
        reconstruction=VISUAL_MP4,
        frame_metrics=FRAME_METRICS,
        visual_tokens=VISUAL_TOKENS,
    output:
        comparison=report(
            COMPARISON_MP4,
            caption="../report/comparison.rst",
            category="Comparison videos",
            labels={"video": "{video}", "preset": "{preset}"},
        ),
    log:
        f"{RESULTS}/logs/{{preset}}/{{video}}.compare_video.log",
    params:
        crf=config["reconstruction"]["crf"],
        x264_preset=config["reconstruction"]["x264_preset"],
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/compare_video.py"


rule plot_quality:
    input:
        all_summaries(),
    output:
        report(
            f"{RESULTS}/report/quality_vs_tokens.png",
            caption="../report/quality_vs_tokens.rst",
            category="Quality against token rate",
        ),
    log:
        f"{RESULTS}/logs/plot_quality.log",
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/plot_quality.py"


rule plot_frame_psnr:
    input:
        unpack(frame_metrics_of_video),
    output:
        plot=report(
            PSNR_PLOT,
            caption="../report/psnr_per_frame.rst",
            category="PSNR per frame",
            labels={"video": "{video}"},
        ),
    log:
        f"{RESULTS}/logs/{{video}}.plot_frame_psnr.log",
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/plot_frame_psnr.py"


rule manifest:
    input:
        unpack(manifest_inputs),
    output:
        f"{RESULTS}/manifest.jsonl",
    log:
        f"{RESULTS}/logs/manifest.log",
    params:
        weights_of={name: PRESETS[name].weights for name in RUN},
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/manifest.py"
