# The reconstructed video and audio in one mp4, to watch and listen to.


rule mux:
    input:
        video=f"{RESULTS}/{{preset}}/reconstructed/{{video}}_visual.mp4",
        audio=audio_of_preset("reconstructed.wav"),
    output:
        f"{RESULTS}/{{preset}}/reconstructed/{{video}}_combined.mp4",
    log:
        f"{RESULTS}/logs/{{preset}}/{{video}}.mux.log",
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/mux.py"
