# The reconstructed video and audio in one mp4, to watch and listen to.


rule mux:
    input:
        video=VISUAL_MP4,
        audio=audio_file(RECONSTRUCTED_WAV),
    output:
        combined=COMBINED_MP4,
    log:
        f"{RESULTS}/logs/{{preset}}/{{video}}.mux.log",
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/mux.py"
