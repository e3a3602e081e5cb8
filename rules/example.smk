# The bundled example clip, synthesised with ffmpeg (config/videos.tsv lists it).


rule example_video:
    output:
        EXAMPLE_VIDEO,
    log:
        "logs/example_video.log",
    params:
        seconds=4,
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/example_video.py"
