# Official weights, fetched once into `checkpoints` unless already there (localrule: on a
# cluster the head node usually has the network access), and stand-in weights for
# `weights: demo`, built here in the official file formats.


rule download_cosmos:
    output:
        encoder=f"{CHECKPOINTS}/{{folder}}/encoder.jit",
        decoder=f"{CHECKPOINTS}/{{folder}}/decoder.jit",
    log:
        "logs/download/{folder}.log",
    params:
        repo=repo_of_folder,
    localrule: True
    priority: 100
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/download_cosmos.py"


rule download_dac:
    output:
        dac_file(CHECKPOINTS),
    log:
        "logs/download/dac.log",
    params:
        url=config["dac_url"],
    localrule: True
    priority: 100
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/download_dac.py"


rule demo_cosmos_weights:
    output:
        encoder=f"{DEMO_WEIGHTS}/{{model}}/encoder.jit",
        decoder=f"{DEMO_WEIGHTS}/{{model}}/decoder.jit",
    log:
        "logs/demo_weights/{model}.log",
    params:
        factors=demo_factors,
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/demo_cosmos_weights.py"


rule demo_dac_weights:
    output:
        dac_file(DEMO_WEIGHTS),
    log:
        "logs/demo_weights/dac.log",
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/demo_dac_weights.py"
