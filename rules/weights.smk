# Stand-in weights for `weights: demo`, built here in the official file formats.


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
        f"{DEMO_WEIGHTS}/dac/{DAC_WEIGHTS_FILE}",
    log:
        "logs/demo_weights/dac.log",
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/demo_dac_weights.py"
