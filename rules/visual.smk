# Video: source -> visual tokens of the preset's tokenizer family (streamed in windows) -> reconstructed mp4, each decoded
# frame scored against its source frame on the way (before the mp4 encode).


rule visual_encode:
    input:
        source=source_input,
        weights=checkpoint_files(model_files("encoder", "decoder")),
    output:
        tokens=VISUAL_TOKENS,
    log:
        f"{RESULTS}/logs/{{preset}}/{{video}}.visual_encode.log",
    params:
        preset=of_plan("visual_params", "preset"),
        checkpoint=as_found(of_plan("model_folder", "preset")),
        weights_lock=of_plan("preset_lock", "preset"),
        picture=config["picture"],
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=720,
    conda:
        "../envs/avtokens.yaml"
    threads: 4
    script:
        "../scripts/visual_encode.py"


rule visual_decode:
    input:
        tokens=VISUAL_TOKENS,
        weights=checkpoint_files(model_files("decoder")),
        source=source_input,
    output:
        video=VISUAL_MP4,
        frame_metrics=FRAME_METRICS,
    log:
        f"{RESULTS}/logs/{{preset}}/{{video}}.visual_decode.log",
    params:
        preset=of_plan("visual_params", "preset"),
        checkpoint=as_found(of_plan("model_folder", "preset")),
        weights_lock=of_plan("preset_lock", "preset"),
        crf=config["reconstruction"]["crf"],
        x264_preset=config["reconstruction"]["x264_preset"],
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=720,
    conda:
        "../envs/avtokens.yaml"
    threads: 4
    script:
        "../scripts/visual_decode.py"
