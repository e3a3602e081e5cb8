from avtokens.packing import check_pack
from avtokens.rule import run_rule

run_rule(snakemake, check_pack, snakemake.input.indexes, snakemake.output[0])
