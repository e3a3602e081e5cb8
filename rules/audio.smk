# Audio, once per video and codec setting (and weights), however many presets run: source ->
# mono wav at the codec's sample rate (once per rate) and the video's timeline -> codes -> wav.
# align_audio then groups a video's codes by each preset's latent frames, without running a model.
# What a codec is and how it codes: avtokens.audio_codecs.


rule extract_wav:
    input:
        source=source_input,
    output:
        wav=WAV,
        timeline=TIMELINE,
    log:
        f"{RESULTS}/logs/audio/{{rate}}hz/{{video}}.extract_wav.log",
    threads: 2
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/extract_wav.py"


rule audio_encode:
    input:
        wav=audio_file(WAV),
        timeline=audio_file(TIMELINE),
        weights=checkpoint_files(of_plan("codec_files", "codec", "weights")),
    output:
        codes=CODES,
    log:
        f"{RESULTS}/logs/audio/{{codec}}/{{weights}}/{{video}}.audio_encode.log",
    params:
        codec=of_plan("codec_params", "codec"),
        checkpoint=as_found(of_plan("codec_folder", "codec", "weights")),
        weights_lock=of_plan("weights_lock", "weights"),
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
        weights=checkpoint_files(of_plan("codec_files", "codec", "weights")),
    output:
        wav=RECONSTRUCTED_WAV,
    log:
        f"{RESULTS}/logs/audio/{{codec}}/{{weights}}/{{video}}.audio_decode.log",
    params:
        codec=of_plan("codec_params", "codec"),
        checkpoint=as_found(of_plan("codec_folder", "codec", "weights")),
        weights_lock=of_plan("weights_lock", "weights"),
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
        codes=audio_file(CODES),
        visual_tokens=VISUAL_TOKENS,
    output:
        audio_tokens=AUDIO_TOKENS,
    log:
        f"{RESULTS}/logs/{{preset}}/{{video}}.align_audio.log",
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/align_audio.py"
