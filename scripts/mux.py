from avtokens.atomic import atomic_output
from avtokens.media import mux
from avtokens.rule import run_rule


def main(video, audio, dest):
    with atomic_output(dest) as tmp:
        mux(video, audio, tmp)


run_rule(snakemake, main, snakemake.input.video, snakemake.input.audio, snakemake.output[0])
