from avtokens.audio import align_codes
from avtokens.rule import run_rule

run_rule(
    snakemake,
    align_codes,
    codes_path=snakemake.input.codes,
    visual_tokens=snakemake.input.visual_tokens,
    dest=snakemake.output[0],
)
