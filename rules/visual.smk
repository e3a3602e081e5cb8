# Video: source -> Cosmos tokens (streamed in windows) -> reconstructed mp4, each decoded
# frame scored against its source frame on the way (before the mp4 encode).


if VIDEOS_PER_JOB == 1:

    rule visual_encode:
        input:
            videos=source_videos,
            encoder=weights_file("encoder"),
            decoder=weights_file("decoder"),
        output:
            f"{RESULTS}/{{preset}}/tokens/{{video}}_visual_tokens.safetensors",
        log:
            f"{RESULTS}/logs/{{preset}}/{{video}}.visual_encode.log",
        params:
            preset=preset_params,
            weights_lock=weights_lock,
            picture=config["picture"],
            names=video_names,
        resources:
            gpu=1,
            mem_mb=16000,
            runtime=720,
        conda:
            "../envs/avtokens.yaml"
        threads: 4
        script:
            "../scripts/visual_encode.py"

else:
    # `videos_per_job` > 1: one job per batch of videos loads the encoder once for all of
    # them; outputs stay per video. A batch reruns as a whole when one of its videos does.
    for batch_number, batch in enumerate(VIDEO_BATCHES):

        rule:
            name:
                f"visual_encode_batch{batch_number}"
            input:
                videos=[videos.loc[name, "path"] for name in batch],
                encoder=weights_file("encoder"),
                decoder=weights_file("decoder"),
            output:
                batch_files(batch, "{{preset}}/tokens/{video}_visual_tokens.safetensors"),
            log:
                f"{RESULTS}/logs/{{preset}}/batch{batch_number}.visual_encode.log",
            params:
                preset=preset_params,
                weights_lock=weights_lock,
                picture=config["picture"],
                names=batch,
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
        tokens=f"{RESULTS}/{{preset}}/tokens/{{video}}_visual_tokens.safetensors",
        decoder=weights_file("decoder"),
        source=source_video,
    output:
        video=f"{RESULTS}/{{preset}}/reconstructed/{{video}}_visual.mp4",
        frame_metrics=f"{RESULTS}/{{preset}}/metrics/{{video}}_frames.tsv",
    log:
        f"{RESULTS}/logs/{{preset}}/{{video}}.visual_decode.log",
    params:
        preset=preset_params,
        weights_lock=weights_lock,
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
