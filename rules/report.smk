# Fidelity: numbers per video x preset (and per video for the audio, coded once), tables
# across the grid, comparison videos and plots, and the report's pages that show them
# (`snakemake --report report.zip`): an overview and one page per preset.


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
        source_wav=audio_file(WAV),
        reconstructed_wav=RECONSTRUCTED_WAV,
    output:
        summary=AUDIO_SUMMARY,
    log:
        f"{RESULTS}/logs/audio/{{codec}}/{{weights}}/{{video}}.summarize_audio.log",
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/summarize_audio.py"


rule audio_table:
    input:
        per_video(AUDIO_SUMMARY, "summarize_audio"),
    output:
        f"{RESULTS}/report/audio_table.tsv",
    log:
        f"{RESULTS}/logs/audio_table.log",
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/audio_table.py"


rule token_table:
    input:
        per_video(SUMMARY, "summarize"),
    output:
        f"{RESULTS}/report/token_table.tsv",
    log:
        f"{RESULTS}/logs/token_table.log",
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/token_table.py"


rule compare_video:
    input:
        source=source_input,
        reconstruction=VISUAL_MP4,
        frame_metrics=FRAME_METRICS,
        visual_tokens=VISUAL_TOKENS,
    output:
        comparison=COMPARISON_MP4,
    log:
        f"{RESULTS}/logs/{{preset}}/{{video}}.compare_video.log",
    params:
        crf=config["reconstruction"]["crf"],
        x264_preset=config["reconstruction"]["x264_preset"],
    conda:
        "../envs/avtokens.yaml"
    # Two decodes and an x264 encode of twice the width: as many threads as visual_decode.
    threads: 4
    script:
        "../scripts/compare_video.py"


rule plot_quality:
    input:
        per_video(SUMMARY, "summarize"),
    output:
        f"{RESULTS}/report/quality_vs_tokens.png",
    log:
        f"{RESULTS}/logs/plot_quality.log",
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/plot_quality.py"


rule plot_frame_psnr:
    input:
        unpack(lambda wildcards: {name: fill_pattern(FRAME_METRICS, {"preset": name, "video": wildcards.video})
                                  for name in RUN}),
    output:
        plot=PSNR_PLOT,
    log:
        f"{RESULTS}/logs/{{video}}.plot_frame_psnr.log",
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/plot_frame_psnr.py"


# The pages link files and write a page: local jobs, not cluster ones.
rule report_overview:
    localrule: True
    input:
        token_table=f"{RESULTS}/report/token_table.tsv",
        audio_table=f"{RESULTS}/report/audio_table.tsv",
        quality_plot=f"{RESULTS}/report/quality_vs_tokens.png",
    output:
        report(
            directory(REPORT_OVERVIEW),
            htmlindex="index.html",
            caption="../report/overview.rst",
            category="Fidelity",
            labels={"page": "overview: tables and quality against token rate"},
        ),
    log:
        f"{RESULTS}/logs/report_overview.log",
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/report_overview.py"


rule report_preset_page:
    localrule: True
    input:
        comparisons=lambda wildcards: per_video(COMPARISON_MP4, "compare_video", [wildcards.preset]),
        psnr_plots=per_video(PSNR_PLOT, "plot_frame_psnr"),
        token_table=f"{RESULTS}/report/token_table.tsv",
    output:
        report(
            directory(REPORT_PRESET_PAGE),
            htmlindex="index.html",
            caption="../report/preset_page.rst",
            category="Comparison videos",
            labels={"page": "{preset}"},
        ),
    log:
        f"{RESULTS}/logs/{{preset}}/report_preset_page.log",
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/report_preset_page.py"


rule manifest:
    input:
        unpack(manifest_inputs),
    output:
        f"{RESULTS}/manifest.jsonl",
    log:
        f"{RESULTS}/logs/manifest.log",
    params:
        audio_of=PLAN.audio_of(),
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/manifest.py"
