# Audio, once per video (and DAC weights), however many presets run: source -> 44.1 kHz
# mono wav and the video's timeline -> DAC codes -> wav. align_audio then groups a video's
# codes by each preset's latent frames, without running DAC.


rule extract_wav:
    input:
        source_video,
    output:
        wav=f"{RESULTS}/audio/{{video}}.wav",
        timeline=f"{RESULTS}/audio/{{video}}_timeline.json",
    log:
        f"{RESULTS}/logs/audio/{{video}}.extract_wav.log",
    threads: 2
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/extract_wav.py"


if VIDEOS_PER_JOB == 1:

    rule audio_encode:
        input:
            wavs=[f"{RESULTS}/audio/{{video}}.wav"],
            timelines=[f"{RESULTS}/audio/{{video}}_timeline.json"],
            weights=dac_weights,
        output:
            f"{RESULTS}/audio/{{weights}}/{{video}}_codes.safetensors",
        log:
            f"{RESULTS}/logs/audio/{{weights}}/{{video}}.audio_encode.log",
        params:
            weights_lock=dac_weights_lock,
        resources:
            gpu=1,
            mem_mb=8000,
            runtime=120,
        conda:
            "../envs/avtokens.yaml"
        threads: 2
        script:
            "../scripts/audio_encode.py"

    rule audio_decode:
        input:
            codes=[f"{RESULTS}/audio/{{weights}}/{{video}}_codes.safetensors"],
            weights=dac_weights,
        output:
            f"{RESULTS}/audio/{{weights}}/{{video}}_reconstructed.wav",
        log:
            f"{RESULTS}/logs/audio/{{weights}}/{{video}}.audio_decode.log",
        params:
            weights_lock=dac_weights_lock,
        resources:
            gpu=1,
            mem_mb=8000,
            runtime=120,
        conda:
            "../envs/avtokens.yaml"
        threads: 2
        script:
            "../scripts/audio_decode.py"

else:
    # `videos_per_job` > 1: as for visual_encode, one job codes (or decodes) a batch of
    # videos with one DAC load; outputs stay per video.
    for batch_number, batch in enumerate(VIDEO_BATCHES):

        rule:
            name:
                f"audio_encode_batch{batch_number}"
            input:
                wavs=batch_files(batch, "audio/{video}.wav"),
                timelines=batch_files(batch, "audio/{video}_timeline.json"),
                weights=dac_weights,
            output:
                batch_files(batch, "audio/{{weights}}/{video}_codes.safetensors"),
            log:
                f"{RESULTS}/logs/audio/{{weights}}/batch{batch_number}.audio_encode.log",
            params:
                weights_lock=dac_weights_lock,
            resources:
                gpu=1,
                mem_mb=8000,
                runtime=120,
            conda:
                "../envs/avtokens.yaml"
            threads: 2
            script:
                "../scripts/audio_encode.py"

        rule:
            name:
                f"audio_decode_batch{batch_number}"
            input:
                codes=batch_files(batch, "audio/{{weights}}/{video}_codes.safetensors"),
                weights=dac_weights,
            output:
                batch_files(batch, "audio/{{weights}}/{video}_reconstructed.wav"),
            log:
                f"{RESULTS}/logs/audio/{{weights}}/batch{batch_number}.audio_decode.log",
            params:
                weights_lock=dac_weights_lock,
            resources:
                gpu=1,
                mem_mb=8000,
                runtime=120,
            conda:
                "../envs/avtokens.yaml"
            threads: 2
            script:
                "../scripts/audio_decode.py"


rule align_audio:
    input:
        codes=audio_of_preset("codes.safetensors"),
        visual_tokens=f"{RESULTS}/{{preset}}/tokens/{{video}}_visual_tokens.safetensors",
    output:
        f"{RESULTS}/{{preset}}/tokens/{{video}}_audio_tokens.safetensors",
    log:
        f"{RESULTS}/logs/{{preset}}/{{video}}.align_audio.log",
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/align_audio.py"
