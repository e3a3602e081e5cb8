from avtokens.report_pages import write_overview
from avtokens.rule import run_rule

files = snakemake.input
run_rule(
    snakemake, write_overview, snakemake.output[0], files.token_table, files.audio_table, files.quality_plot
)
