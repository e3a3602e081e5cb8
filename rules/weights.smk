# Official weights, fetched once into `checkpoints` unless already there (localrule: on a
# cluster the head node usually has the network access), and stand-in weights for
# `weights: demo`, built here in the official file formats. Which files a checkpoint has, where
# they come from and how a stand-in is made are its visual tokenizer family's
# (avtokens.visual_tokenizers) or audio codec's (avtokens.audio_codecs).

from avtokens.checkpoints import WEIGHTS_LOCK_VARIABLE

# A download job records the commit it fetches a repo at in the weights lock, whose path
# reaches it through the environment: a new param, or an edited script, would make Snakemake
# refetch every checkpoint fetched before, and so rerun every job that reads one.
os.environ[WEIGHTS_LOCK_VARIABLE] = os.path.abspath(PLAN.weights_lock("official"))


rule download_weights:
    output:
        f"{PLAN.checkpoints}/{{folder}}/{{file}}",
    log:
        "logs/download/{folder}/{file}.log",
    params:
        source=of_plan("official_source", "folder"),
        folder=as_found(lambda wildcards: f"{PLAN.checkpoints}/{wildcards.folder}"),
    localrule: True
    priority: 100
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/download_weights.py"


rule stand_in_weights:
    output:
        directory(f"{DEMO_WEIGHTS}/{{model}}"),
    log:
        "logs/demo_weights/{model}.log",
    params:
        model=of_plan("demo_model", "model"),
    conda:
        "../envs/avtokens.yaml"
    script:
        "../scripts/stand_in_weights.py"
