from avtokens.atomic import atomic_output
from avtokens.audio import SAMPLE_RATE
from avtokens.media import extract_wav, probe
from avtokens.rule import run_rule


def main(source, dest):
    with atomic_output(dest) as tmp:
        extract_wav(source, tmp, probe(source), SAMPLE_RATE)


run_rule(snakemake, main, snakemake.input[0], snakemake.output[0])
