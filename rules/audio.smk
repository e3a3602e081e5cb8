# Audio: source -> 44.1 kHz mono wav -> DAC codes aligned to latent frames -> wav.


rule extract_wav:
    input:
        source_video,
    output:
        f"{RESULTS}/audio/{{video}}.wav",
    log:
        f"{RESULTS}/logs/audio/{{video}}.extract_wav.log",
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/extract_wav.py"


rule audio_encode:
    input:
        wav=f"{RESULTS}/audio/{{video}}.wav",
        visual_tokens=f"{RESULTS}/{{preset}}/tokens/{{video}}_visual_tokens.safetensors",
        weights=weights_file("dac"),
    output:
        f"{RESULTS}/{{preset}}/tokens/{{video}}_audio_tokens.safetensors",
    log:
        f"{RESULTS}/logs/{{preset}}/{{video}}.audio_encode.log",
    params:
        weights_lock=weights_lock,
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
        tokens=f"{RESULTS}/{{preset}}/tokens/{{video}}_audio_tokens.safetensors",
        weights=weights_file("dac"),
    output:
        f"{RESULTS}/{{preset}}/reconstructed/{{video}}_audio.wav",
    log:
        f"{RESULTS}/logs/{{preset}}/{{video}}.audio_decode.log",
    params:
        weights_lock=weights_lock,
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    conda:
        "../envs/avtokens.yaml"
    threads: 2
    script:
        "../scripts/audio_decode.py"
