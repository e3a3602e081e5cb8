# Audio, once per video (and DAC weights), however many presets run: source -> 44.1 kHz
# mono wav and the video's timeline -> DAC codes -> wav. align_audio then groups a video's
# codes by each preset's latent frames, without running DAC.


rule extract_wav:
    input:
        source=source_video,
    output:
        wav=WAV,
        timeline=TIMELINE,
    log:
        f"{RESULTS}/logs/audio/{{video}}.extract_wav.log",
    threads: 2
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/extract_wav.py"


rule audio_encode:
    input:
        wav=WAV,
        timeline=TIMELINE,
        weights=dac_weights,
    output:
        codes=CODES,
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
        codes=CODES,
        weights=dac_weights,
    output:
        wav=RECONSTRUCTED_WAV,
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


rule align_audio:
    input:
        codes=audio_of_preset(CODES),
        visual_tokens=VISUAL_TOKENS,
    output:
        audio_tokens=AUDIO_TOKENS,
    log:
        f"{RESULTS}/logs/{{preset}}/{{video}}.align_audio.log",
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/align_audio.py"
